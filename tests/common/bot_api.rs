//! A local HTTP server that answers like the Telegram Bot API, with a real `teloxide::Bot`
//! pointed at it. It records every request and can fail requests to chosen chats the way
//! Telegram does (403 blocked, 403 deactivated, 400 chat not found, 429, 5xx).
#![allow(dead_code, unreachable_pub)] // Shared with the demo, which uses a part.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use teloxide::Bot;
use wiremock::matchers::{method, path_regex};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

pub const BOT_ID: u64 = 5_000_000_001;
pub const BOT_USERNAME: &str = "retention_test_bot";

/// One request the bot made.
#[derive(Debug, Clone)]
pub struct Sent {
    /// Lower-case method name, such as `sendmessage`.
    pub method: String,
    pub chat_id: Option<i64>,
    /// The JSON body (empty object for multipart requests).
    pub body: Value,
    /// The raw body (multipart uploads).
    pub raw: Vec<u8>,
    /// Whether the fake answered with an error.
    pub failed: bool,
}

impl Sent {
    pub fn text(&self) -> Option<&str> {
        self.body.get("text").and_then(Value::as_str)
    }

    /// Callback data of every inline button.
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
    failures: HashMap<i64, (u16, String)>,
    next_message_id: i64,
    sent: Vec<Sent>,
}

#[derive(Clone)]
pub struct FakeBotApi {
    server: Arc<MockServer>,
    state: Arc<Mutex<State>>,
    /// Made once: a `Bot` builds an HTTP client with TLS, tens of milliseconds each.
    bot: Bot,
}

impl FakeBotApi {
    pub async fn start() -> Self {
        let server = MockServer::start().await;
        let state = Arc::new(Mutex::new(State { next_message_id: 1000, ..State::default() }));
        Mock::given(method("POST"))
            .and(path_regex(r"^/bot[^/]+/[A-Za-z]+$"))
            .respond_with(Responder { state: Arc::clone(&state) })
            .mount(&server)
            .await;
        let bot = Bot::new("12345:TEST-TOKEN").set_api_url(server.uri().parse().unwrap());
        Self { server: Arc::new(server), state, bot }
    }

    pub fn bot(&self) -> Bot {
        self.bot.clone()
    }

    /// Makes every request to `chat` (or forwarding from it) fail with this status and
    /// description.
    pub fn fail_chat(&self, chat: i64, status: u16, description: &str) {
        self.state.lock().unwrap().failures.insert(chat, (status, description.to_owned()));
    }

    /// Lets requests to `chat` succeed again.
    pub fn heal_chat(&self, chat: i64) {
        self.state.lock().unwrap().failures.remove(&chat);
    }

    pub fn sent(&self) -> Vec<Sent> {
        self.state.lock().unwrap().sent.clone()
    }

    /// Successful requests of `method` (lower-case) to `chat`.
    pub fn sent_to(&self, method: &str, chat: i64) -> Vec<Sent> {
        self.sent()
            .into_iter()
            .filter(|s| s.method == method && s.chat_id == Some(chat) && !s.failed)
            .collect()
    }

    /// Texts of successful `sendMessage` and `editMessageText` requests to `chat`, in order.
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

    pub fn clear(&self) {
        self.state.lock().unwrap().sent.clear();
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
        let mut state = self.state.lock().unwrap();
        let failure = [chat_id, from_chat_id]
            .into_iter()
            .flatten()
            .find_map(|c| state.failures.get(&c).cloned());
        state.sent.push(Sent {
            method: method.clone(),
            chat_id,
            body: body.clone(),
            raw: request.body.clone(),
            failed: failure.is_some(),
        });
        if let Some((status, description)) = failure {
            let mut answer =
                json!({ "ok": false, "error_code": status, "description": description });
            if status == 429 {
                answer["parameters"] = json!({ "retry_after": 3 });
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

/// The value of a field in a multipart/form-data body.
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

/// The content of an uploaded file field, following teloxide's `attach://<part>` indirection.
pub fn uploaded_file(raw: &[u8], name: &str) -> Option<String> {
    let value = multipart_field(raw, name)?;
    match value.strip_prefix("attach://") {
        Some(part) => multipart_field(raw, part),
        None => Some(value),
    }
}
