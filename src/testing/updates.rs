//! Update JSON as Telegram sends it (shapes from the Bot API documentation and real bots),
//! for [`TestBot::push`](super::TestBot::push) and [`parse`](super::parse).
//!
//! Each builder returns the update's JSON, so that a test can adjust a field; every one of
//! them parses into a real teloxide `Update` (this module's tests check it), and
//! [`parse`](super::parse) fails loudly on JSON teloxide would not understand, which the
//! dispatcher would otherwise drop without a word.
//!
//! ```
//! use teloxide::types::UpdateKind;
//! use teloxide_retention::testing::{parse, updates};
//!
//! let update = parse(updates::in_language(updates::message(7, "/privacy"), "de"));
//! let UpdateKind::Message(message) = update.kind else { panic!("a message") };
//! assert_eq!(message.from.unwrap().language_code.as_deref(), Some("de"));
//! assert!(matches!(parse(updates::blocked(7)).kind, UpdateKind::MyChatMember(_)));
//! ```

use std::sync::atomic::{AtomicI64, Ordering};

use serde_json::{Value, json};

use super::bot_api::{BOT_ID, BOT_USERNAME};

static NEXT_ID: AtomicI64 = AtomicI64::new(1);

fn next() -> i64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

/// The chat id of the group of [`group_message`] and [`group_chat`].
pub const GROUP: i64 = -1_001_234_567_890;
/// The chat id of the channel of [`channel_post`].
pub const CHANNEL: i64 = -1_009_876_543_210;

/// A human user (`is_bot: false`, language `en`).
#[must_use]
pub fn user(id: u64) -> Value {
    json!({ "id": id, "is_bot": false, "first_name": format!("User{id}"), "language_code": "en" })
}

fn bot_user() -> Value {
    json!({ "id": BOT_ID, "is_bot": true, "first_name": "Retention Test", "username": BOT_USERNAME })
}

/// The private chat with user `id` (its id is the user's).
#[must_use]
pub fn private_chat(id: u64) -> Value {
    json!({ "id": id, "first_name": format!("User{id}"), "type": "private" })
}

/// The test group ([`GROUP`]).
#[must_use]
pub fn group_chat() -> Value {
    json!({ "id": GROUP, "title": "Test group", "type": "supergroup" })
}

fn message_in(from: Option<Value>, chat: Value, text: &str) -> Value {
    let mut m = json!({ "message_id": next(), "date": 1_700_000_000, "chat": chat, "text": text });
    if let Some(from) = from {
        m["from"] = from;
    }
    if text.starts_with('/') {
        let len = text.split_whitespace().next().unwrap().encode_utf16().count();
        m["entities"] = json!([{ "type": "bot_command", "offset": 0, "length": len }]);
    }
    m
}

/// A text message from `user_id` in their private chat; a text starting with `/` is a
/// command (with its `bot_command` entity).
#[must_use]
pub fn message(user_id: u64, text: &str) -> Value {
    json!({ "update_id": next(), "message": message_in(Some(user(user_id)), private_chat(user_id), text) })
}

/// `update` (a message or a callback query) from a user whose Telegram app speaks `code`.
#[must_use]
pub fn in_language(mut update: Value, code: &str) -> Value {
    for kind in ["message", "callback_query"] {
        if let Some(from) = update.get_mut(kind).and_then(|m| m.get_mut("from")) {
            from["language_code"] = json!(code);
        }
    }
    update
}

/// A text message from `user_id` in the test group.
#[must_use]
pub fn group_message(user_id: u64, text: &str) -> Value {
    json!({ "update_id": next(), "message": message_in(Some(user(user_id)), group_chat(), text) })
}

/// An edit of a message of `user_id` in their private chat.
#[must_use]
pub fn edited_message(user_id: u64, text: &str) -> Value {
    let mut m = message_in(Some(user(user_id)), private_chat(user_id), text);
    m["edit_date"] = json!(1_700_000_100);
    json!({ "update_id": next(), "edited_message": m })
}

/// A press by `user_id` of an inline button with callback `data` under a message the bot
/// sent to `chat` ([`private_chat`] or [`group_chat`]).
#[must_use]
pub fn callback(user_id: u64, chat: Value, data: &str) -> Value {
    let mut bot_message = message_in(Some(bot_user()), chat, "prompt");
    bot_message["message_id"] = json!(1);
    json!({
        "update_id": next(),
        "callback_query": {
            "id": format!("cbq-{}", next()),
            "from": user(user_id),
            "message": bot_message,
            "chat_instance": "-8123456789",
            "data": data,
        }
    })
}

/// A press of a button under a message sent in inline mode: no `message`, an
/// `inline_message_id` instead.
#[must_use]
pub fn inline_callback(user_id: u64, data: &str) -> Value {
    json!({
        "update_id": next(),
        "callback_query": {
            "id": format!("cbq-{}", next()),
            "from": user(user_id),
            "inline_message_id": "AgAAAJ2gAwA1N2Xk",
            "chat_instance": "-8123456789",
            "data": data,
        }
    })
}

/// An inline query of `user_id`.
#[must_use]
pub fn inline_query(user_id: u64, query: &str) -> Value {
    json!({
        "update_id": next(),
        "inline_query": {
            "id": format!("iq-{}", next()), "from": user(user_id), "query": query,
            "offset": "", "chat_type": "sender",
        }
    })
}

/// A post in a channel: no `from` at all.
#[must_use]
pub fn channel_post(text: &str) -> Value {
    let chat = json!({ "id": CHANNEL, "title": "News", "type": "channel" });
    let mut post = message_in(None, chat.clone(), text);
    post["sender_chat"] = chat;
    json!({ "update_id": next(), "channel_post": post })
}

/// An anonymous group admin's message: `from` is `GroupAnonymousBot`.
#[must_use]
pub fn anonymous_admin_message(text: &str) -> Value {
    let from = json!({ "id": 1_087_968_824u64, "is_bot": true, "first_name": "Group",
                       "username": "GroupAnonymousBot" });
    let mut m = message_in(Some(from), group_chat(), text);
    m["sender_chat"] = group_chat();
    json!({ "update_id": next(), "message": m })
}

/// An automatic forward of a channel post into its discussion group: `from` is 777000.
#[must_use]
pub fn telegram_service_message(text: &str) -> Value {
    let from = json!({ "id": 777_000, "is_bot": false, "first_name": "Telegram" });
    let mut m = message_in(Some(from), group_chat(), text);
    m["is_automatic_forward"] = json!(true);
    json!({ "update_id": next(), "message": m })
}

/// A message from another bot in a group.
#[must_use]
pub fn bot_message(bot_id: u64, text: &str) -> Value {
    let from =
        json!({ "id": bot_id, "is_bot": true, "first_name": "Other", "username": "other_bot" });
    json!({ "update_id": next(), "message": message_in(Some(from), group_chat(), text) })
}

/// A poll update: no user.
#[must_use]
pub fn poll() -> Value {
    json!({
        "update_id": next(),
        "poll": {
            "id": "5432", "question": "Lunch?",
            "options": [{ "text": "Pizza", "voter_count": 3 }, { "text": "Salad", "voter_count": 1 }],
            "total_voter_count": 4, "is_closed": false, "is_anonymous": true,
            "type": "regular", "allows_multiple_answers": false,
        }
    })
}

fn chat_member_update(chat: Value, from: Value, old: Value, new: Value) -> Value {
    json!({
        "update_id": next(),
        "my_chat_member": {
            "chat": chat, "from": from, "date": 1_700_000_000,
            "old_chat_member": old, "new_chat_member": new,
        }
    })
}

/// The user blocked the bot ("Stop bot" / "Delete and block"): `new_chat_member.user` is the
/// bot itself, the user is `from`.
#[must_use]
pub fn blocked(user_id: u64) -> Value {
    chat_member_update(
        private_chat(user_id),
        user(user_id),
        json!({ "user": bot_user(), "status": "member" }),
        json!({ "user": bot_user(), "status": "kicked", "until_date": 0 }),
    )
}

/// A block in the private chat of `chat_user` whose `from` is another user: a shape
/// Telegram does not send, which marks nobody.
#[must_use]
pub fn blocked_by_other(chat_user: u64, from: u64) -> Value {
    chat_member_update(
        private_chat(chat_user),
        user(from),
        json!({ "user": bot_user(), "status": "member" }),
        json!({ "user": bot_user(), "status": "kicked", "until_date": 0 }),
    )
}

/// The user unblocked the bot (restarted it).
#[must_use]
pub fn unblocked(user_id: u64) -> Value {
    chat_member_update(
        private_chat(user_id),
        user(user_id),
        json!({ "user": bot_user(), "status": "kicked", "until_date": 0 }),
        json!({ "user": bot_user(), "status": "member" }),
    )
}

/// An admin (`admin_id`) removed the bot from the group.
#[must_use]
pub fn bot_kicked_from_group(admin_id: u64) -> Value {
    chat_member_update(
        group_chat(),
        user(admin_id),
        json!({ "user": bot_user(), "status": "member" }),
        json!({ "user": bot_user(), "status": "kicked", "until_date": 0 }),
    )
}

#[cfg(test)]
mod tests {
    use teloxide::types::UpdateKind;

    use super::*;

    #[test]
    fn every_builder_makes_an_update_teloxide_understands() {
        let all = [
            message(1, "hi"),
            message(1, "/removemydata"),
            in_language(message(1, "/privacy"), "de"),
            group_message(1, "hi"),
            edited_message(1, "hi"),
            callback(1, private_chat(1), "rtn:rm:1:n:y"),
            in_language(callback(1, group_chat(), "x"), "pt-br"),
            inline_callback(1, "x"),
            inline_query(1, "q"),
            channel_post("news"),
            anonymous_admin_message("hi"),
            telegram_service_message("hi"),
            bot_message(42, "hi"),
            poll(),
            blocked(1),
            blocked_by_other(1, 2),
            unblocked(1),
            bot_kicked_from_group(1),
        ];
        for update in all {
            let parsed = crate::testing::parse(update);
            assert!(!matches!(parsed.kind, UpdateKind::Error(_)));
        }
    }
}
