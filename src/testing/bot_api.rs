//! A local HTTP server that answers like the Telegram Bot API, with a real `teloxide::Bot`
//! pointed at it. It records every request and can fail requests to chosen chats or
//! methods the way Telegram does (403 blocked, 403 deactivated, 400 chat not found, 429).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use teloxide::Bot;
use wiremock::matchers::{method, path_regex};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// The fake bot's own user id (what `getMe` answers).
pub const BOT_ID: u64 = 5_000_000_001;
/// The fake bot's username (what `getMe` answers).
pub const BOT_USERNAME: &str = "retention_test_bot";

/// An error Telegram answers a request with, for [`FakeBotApi::fail_chat_with`] and
/// [`FakeBotApi::fail_method`]: the status and description Telegram uses, which teloxide
/// turns into the same `RequestError` a real bot gets.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TelegramError {
    /// 403 "Forbidden: bot was blocked by the user".
    Blocked,
    /// 403 "Forbidden: user is deactivated" (the account was deleted).
    Deactivated,
    /// 400 "Bad Request: chat not found".
    ChatNotFound,
    /// 429 "Too Many Requests" with `retry_after` seconds.
    TooManyRequests {
        /// The seconds Telegram asks the bot to wait.
        retry_after: u32,
    },
    /// Any other status and description.
    Other {
        /// The HTTP status and `error_code`.
        status: u16,
        /// Telegram's `description`.
        description: String,
    },
}

impl TelegramError {
    fn answer(&self) -> (u16, String, Option<u32>) {
        match self {
            Self::Blocked => (403, "Forbidden: bot was blocked by the user".into(), None),
            Self::Deactivated => (403, "Forbidden: user is deactivated".into(), None),
            Self::ChatNotFound => (400, "Bad Request: chat not found".into(), None),
            Self::TooManyRequests { retry_after } => {
                (429, format!("Too Many Requests: retry after {retry_after}"), Some(*retry_after))
            }
            Self::Other { status, description } => (*status, description.clone(), None),
        }
    }
}

/// One request the bot made.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Sent {
    /// Lower-case method name, such as `sendmessage`.
    pub method: String,
    /// The request's `chat_id`, if it has a numeric one.
    pub chat_id: Option<i64>,
    /// The JSON body (empty object for multipart requests).
    pub body: Value,
    /// The raw body (multipart uploads; see [`uploaded_file`]).
    pub raw: Vec<u8>,
    /// Whether the fake answered with an error.
    pub failed: bool,
}

impl Sent {
    /// The request's `text` (`sendMessage`, `editMessageText`, `answerCallbackQuery`).
    #[must_use]
    pub fn text(&self) -> Option<&str> {
        self.body.get("text").and_then(Value::as_str)
    }

    /// Every inline button: its text, and its callback data (or URL).
    #[must_use]
    pub fn buttons(&self) -> Vec<(String, String)> {
        let rows = self.body.pointer("/reply_markup/inline_keyboard").and_then(Value::as_array);
        rows.into_iter()
            .flatten()
            .flat_map(|row| row.as_array().cloned().unwrap_or_default())
            .map(|b| {
                let text = b["text"].as_str().unwrap_or_default().to_owned();
                let data = b
                    .get("callback_data")
                    .or_else(|| b.get("url"))
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                (text, data)
            })
            .collect()
    }
}

#[derive(Default)]
struct State {
    failures: HashMap<i64, TelegramError>,
    method_failures: HashMap<String, TelegramError>,
    next_message_id: i64,
    sent: Vec<Sent>,
}

/// A fake Telegram Bot API on localhost (an HTTP server of its own), with a real
/// `teloxide::Bot` pointed at it.
///
/// It answers every method teloxide calls (`getMe` included, which the dispatcher asks
/// first), records each request, and fails requests to chosen chats or of chosen methods
/// with Telegram's own errors.
///
/// ```
/// use teloxide::prelude::*;
/// use teloxide_retention::testing::{FakeBotApi, TelegramError};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let api = FakeBotApi::start().await;
/// api.fail_chat_with(42, TelegramError::Blocked);
/// let bot = api.bot();
/// bot.send_message(ChatId(7), "hello").await.unwrap();
/// let err = bot.send_message(ChatId(42), "hello").await.unwrap_err();
/// assert!(matches!(err, teloxide::RequestError::Api(teloxide::ApiError::BotBlocked)));
/// assert_eq!(api.texts_to(7), ["hello"]);
/// # }
/// ```
#[derive(Clone)]
pub struct FakeBotApi {
    server: Arc<MockServer>,
    state: Arc<Mutex<State>>,
    /// Made once: a `Bot` builds an HTTP client with TLS, tens of milliseconds each.
    bot: Bot,
}

impl std::fmt::Debug for FakeBotApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeBotApi").field("uri", &self.server.uri()).finish_non_exhaustive()
    }
}

impl FakeBotApi {
    /// Starts the server on a free port of 127.0.0.1.
    pub async fn start() -> Self {
        let server = MockServer::start().await;
        let state = Arc::new(Mutex::new(State { next_message_id: 1000, ..State::default() }));
        Mock::given(method("POST"))
            .and(path_regex(r"^/bot[^/]+/[A-Za-z]+$"))
            .respond_with(Responder { state: Arc::clone(&state) })
            .mount(&server)
            .await;
        let url = server.uri().parse().expect("the mock server's URI is a URL");
        let bot = Bot::new("12345:TEST-TOKEN").set_api_url(url);
        Self { server: Arc::new(server), state, bot }
    }

    /// A bot that talks to this server (cheap to clone).
    pub fn bot(&self) -> Bot {
        self.bot.clone()
    }

    /// The server's address (`http://127.0.0.1:PORT`), for a bot in another process:
    /// `Bot::new(token).set_api_url(url.parse()?)`.
    #[must_use]
    pub fn url(&self) -> String {
        self.server.uri()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Makes every request to `chat` (or forwarding from it) fail with `error`, until
    /// [`heal_chat`](Self::heal_chat).
    pub fn fail_chat_with(&self, chat: i64, error: TelegramError) {
        self.state().failures.insert(chat, error);
    }

    /// Makes every request to `chat` fail with this status and description.
    pub fn fail_chat(&self, chat: i64, status: u16, description: &str) {
        let description = description.to_owned();
        self.fail_chat_with(chat, TelegramError::Other { status, description });
    }

    /// Makes every request of `method` (any case: `sendDocument`) fail with `error`.
    pub fn fail_method(&self, method: &str, error: TelegramError) {
        self.state().method_failures.insert(method.to_lowercase(), error);
    }

    /// Lets requests to `chat` succeed again.
    pub fn heal_chat(&self, chat: i64) {
        self.state().failures.remove(&chat);
    }

    /// Every request so far, in order.
    #[must_use]
    pub fn sent(&self) -> Vec<Sent> {
        self.state().sent.clone()
    }

    /// Successful requests of `method` (lower-case) to `chat`.
    #[must_use]
    pub fn sent_to(&self, method: &str, chat: i64) -> Vec<Sent> {
        self.sent()
            .into_iter()
            .filter(|s| s.method == method && s.chat_id == Some(chat) && !s.failed)
            .collect()
    }

    /// Texts of successful `sendMessage` and `editMessageText` requests to `chat`, in order.
    #[must_use]
    pub fn texts_to(&self, chat: i64) -> Vec<String> {
        self.sent()
            .into_iter()
            .filter(|s| {
                (s.method == "sendmessage" || s.method == "editmessagetext")
                    && s.chat_id == Some(chat)
                    && !s.failed
            })
            .filter_map(|s| s.text().map(str::to_owned))
            .collect()
    }

    /// The text of the last successful `sendMessage` or `editMessageText` to `chat`.
    #[must_use]
    pub fn last_text_to(&self, chat: i64) -> Option<String> {
        self.texts_to(chat).pop()
    }

    /// Forgets the requests recorded so far.
    pub fn clear(&self) {
        self.state().sent.clear();
    }
}

struct Responder {
    state: Arc<Mutex<State>>,
}

impl Respond for Responder {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let method = request.url.path().rsplit('/').next().unwrap_or_default().to_lowercase();
        let body: Value = serde_json::from_slice(&request.body).unwrap_or_else(|_| json!({}));
        let chat_id = body
            .get("chat_id")
            .and_then(Value::as_i64)
            .or_else(|| multipart_field(&request.body, "chat_id").and_then(|v| v.parse().ok()));
        // A forward or copy also fails when its source chat does (as Telegram answers when
        // it cannot read the message to forward).
        let from_chat_id = body.get("from_chat_id").and_then(Value::as_i64);
        let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let failure = [chat_id, from_chat_id]
            .into_iter()
            .flatten()
            .find_map(|c| state.failures.get(&c).cloned())
            .or_else(|| state.method_failures.get(&method).cloned());
        state.sent.push(Sent {
            method: method.clone(),
            chat_id,
            body: body.clone(),
            raw: request.body.clone(),
            failed: failure.is_some(),
        });
        if let Some(error) = failure {
            let (status, description, retry_after) = error.answer();
            let mut answer =
                json!({ "ok": false, "error_code": status, "description": description });
            if let Some(seconds) = retry_after.or((status == 429).then_some(3)) {
                answer["parameters"] = json!({ "retry_after": seconds });
            }
            return ResponseTemplate::new(status).set_body_json(answer);
        }
        state.next_message_id += 1;
        let message_id = state.next_message_id;
        let result = match method.as_str() {
            "getme" => me(),
            "sendmessage" | "editmessagetext" => message(message_id, chat_id.unwrap_or(0), &body),
            "senddocument" => {
                let mut m = message(message_id, chat_id.unwrap_or(0), &json!({}));
                m["document"] = json!({
                    "file_id": "doc-1", "file_unique_id": "u-doc-1",
                    "file_name": "my-data.json", "mime_type": "application/json",
                });
                m
            }
            _ => json!(true),
        };
        ResponseTemplate::new(200).set_body_json(json!({ "ok": true, "result": result }))
    }
}

fn me() -> Value {
    json!({
        "id": BOT_ID, "is_bot": true, "first_name": "Retention Test",
        "username": BOT_USERNAME, "can_join_groups": true,
        "can_read_all_group_messages": false, "supports_inline_queries": true,
        "can_connect_to_business": false, "has_main_web_app": false,
    })
}

fn message(id: i64, chat: i64, body: &Value) -> Value {
    let chat_json = if chat > 0 {
        json!({ "id": chat, "type": "private", "first_name": "User" })
    } else {
        json!({ "id": chat, "type": "supergroup", "title": "Group" })
    };
    let mut m = json!({
        "message_id": id, "date": 1_700_000_000, "chat": chat_json,
        "from": { "id": BOT_ID, "is_bot": true, "first_name": "Retention Test",
                  "username": BOT_USERNAME },
    });
    if let Some(text) = body.get("text") {
        m["text"] = text.clone();
    }
    m
}

/// The value of a field in a multipart/form-data body (a `sendDocument`'s `chat_id`).
#[must_use]
pub fn multipart_field(raw: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(raw);
    let marker = format!("name=\"{name}\"");
    let start = text.find(&marker)? + marker.len();
    let rest = &text[start..];
    let value_start = rest.find("\r\n\r\n")? + 4;
    let value = &rest[value_start..];
    let end = value.find("\r\n--").unwrap_or(value.len());
    Some(value[..end].to_owned())
}

/// The content of an uploaded file field of a request's raw body, following teloxide's
/// `attach://<part>` indirection: the `/mydata` file a bot sent.
#[must_use]
pub fn uploaded_file(raw: &[u8], name: &str) -> Option<String> {
    let value = multipart_field(raw, name)?;
    match value.strip_prefix("attach://") {
        Some(part) => multipart_field(raw, part),
        None => Some(value),
    }
}
