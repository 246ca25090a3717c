-- What guard.lua leaves in place of a key it sets aside (aside.lua is prepended to
-- guard.lua and unguard.lua): a string no write of this crate ever stores.
local SET_ASIDE = 'teloxide-retention: set aside by the layout fence'
