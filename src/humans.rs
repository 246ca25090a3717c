//! Who the crate tracks: human users only, never bots or Telegram's service accounts.

use teloxide::types::{User, UserId};

/// The largest user id the crate tracks: 2^53 - 1. Telegram's user ids have at most 52
/// significant bits (Bot API, `User.id`), and every id up to this is exact as a Lua number,
/// a JSON number and a Redis score.
pub(crate) const MAX_USER_ID: u64 = (1 << 53) - 1;

/// Whether `id` is a user id the crate can store: not 0, at most [`MAX_USER_ID`].
pub(crate) fn is_user_id(id: u64) -> bool {
    (1..=MAX_USER_ID).contains(&id)
}

/// Reads a stored member as a user id if it is one in canonical form: decimal digits, no
/// sign, no leading zero, not 0, at most [`MAX_USER_ID`] (the same rule as `store/redis/lua/ids.lua`).
/// Anything else (`013950000`, `-5`, `1.5`, `abc`, `18446744073709551616`) is not a user:
/// reading `013950000` as user 13950000 would erase someone else.
pub(crate) fn parse_user(member: &str) -> Option<u64> {
    let bytes = member.as_bytes();
    let canonical = !bytes.is_empty()
        && bytes.len() <= 16
        && bytes[0] != b'0'
        && bytes.iter().all(u8::is_ascii_digit);
    let id: u64 = member.parse().ok().filter(|_| canonical)?;
    is_user_id(id).then_some(id)
}

/// A human user the crate may track: not a bot and not a Telegram service account.
pub(crate) fn is_trackable(user: &User) -> bool {
    !user.is_bot && is_trackable_id(user.id)
}

/// A user id the crate may track: a valid id (not 0, at most 2^53 - 1) that is none of
/// Telegram's service accounts: 777000 (Telegram), 1087968824 (`GroupAnonymousBot`) and
/// 136817688 (`Channel_Bot`).
pub(crate) fn is_trackable_id(id: UserId) -> bool {
    is_user_id(id.0) && !id.is_telegram() && !id.is_anonymous() && !id.is_channel()
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
    fn only_canonical_ids_are_users() {
        assert_eq!(parse_user("13950000"), Some(13_950_000));
        assert_eq!(parse_user("9007199254740991"), Some(MAX_USER_ID));
        for odd in [
            "",
            "0",
            "013950000",
            "-5",
            "+5",
            "1.5",
            "1e3",
            "abc",
            " 42",
            "9007199254740992",
            "99999999999999999999999",
            "18446744073709551616",
        ] {
            assert_eq!(parse_user(odd), None, "{odd:?}");
        }
        assert!(!is_user_id(0));
        assert!(is_user_id(1));
        assert!(!is_user_id(MAX_USER_ID + 1));
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
