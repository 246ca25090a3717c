//! Who the crate tracks: human users only, never bots or Telegram's service accounts.

use teloxide::types::{User, UserId};

/// A human user the crate may track: not a bot and not a Telegram service account.
pub(crate) fn is_trackable(user: &User) -> bool {
    !user.is_bot && is_trackable_id(user.id)
}

/// A user id the crate may track: a valid id (not 0, at most 2^53 - 1) that is none of
/// Telegram's service accounts: 777000 (Telegram), 1087968824 (`GroupAnonymousBot`) and
/// 136817688 (`Channel_Bot`).
pub(crate) fn is_trackable_id(id: UserId) -> bool {
    crate::store::is_user_id(id.0) && !id.is_telegram() && !id.is_anonymous() && !id.is_channel()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: u64, is_bot: bool) -> User {
        User {
            id: UserId(id),
            is_bot,
            first_name: "x".into(),
            last_name: None,
            username: None,
            language_code: None,
            is_premium: false,
            added_to_attachment_menu: false,
        }
    }

    #[test]
    fn service_accounts_and_bots_are_not_tracked() {
        assert!(is_trackable(&user(42, false)));
        assert!(!is_trackable(&user(42, true)));
        assert!(!is_trackable(&user(777_000, false)));
        assert!(!is_trackable(&user(1_087_968_824, true)));
        assert!(!is_trackable(&user(136_817_688, true)));
    }
}
