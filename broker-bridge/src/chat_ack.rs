//! Acknowledging from a chat: presses of the "Ack" button under a firing alarm come back
//! to the bridge and go to the pipeline as [`ChatPress`]es, and the reply goes back to
//! the person who pressed it.
//!
//! Telegram (`ack_button = true` on a `telegram` target): the bridge long-polls the bot's
//! `getUpdates` for `callback_query` updates (no public address needed, which suits a
//! bridge behind a NAT), hands each `ack:<key>` press over, and answers it with
//! `answerCallbackQuery` (the little toast the presser sees). Updates are confirmed by
//! the next poll's `offset`; one that was not (a restart in between) comes again and is
//! answered "already acknowledged".

use std::time::Duration;

use serde::Deserialize;
use serde_json::json;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use lookout_shared::duration::HumanDuration;
use lookout_shared::time::Backoff;

use crate::Error;
use crate::ack::{Alarm, ChatPress, Reply};
use crate::notify::telegram;
use crate::stats::RateLimited;

/// How long one `getUpdates` waits for an update (Telegram's long-poll `timeout`).
const POLL: Duration = Duration::from_secs(25);
/// An answer shorter than this with no updates is a server that does not long-poll:
/// wait the rest before asking again.
const MIN_POLL: Duration = Duration::from_secs(1);
/// How long a press waits for the pipeline's reply before the toast says "try again".
const ANSWER_WAIT: Duration = Duration::from_secs(10);
/// Telegram's limit on a callback answer's text.
const MAX_TOAST: usize = 200;

#[derive(Deserialize)]
struct Updates {
    ok: bool,
    #[serde(default)]
    result: Vec<Update>,
    description: Option<String>,
}

#[derive(Deserialize)]
struct Update {
    update_id: i64,
    callback_query: Option<CallbackQuery>,
}

#[derive(Deserialize)]
struct CallbackQuery {
    id: String,
    from: User,
    data: Option<String>,
}

#[derive(Deserialize)]
struct User {
    first_name: Option<String>,
    username: Option<String>,
    id: i64,
}

impl User {
    /// `@username`, else the first name, else the numeric id.
    fn name(&self) -> String {
        match (&self.username, &self.first_name) {
            (Some(u), _) if !u.is_empty() => format!("@{u}"),
            (_, Some(f)) if !f.is_empty() => f.clone(),
            _ => format!("telegram user {}", self.id),
        }
    }
}

/// Polls target `name`'s bot for "Ack" presses until aborted.
pub fn telegram(
    name: &str,
    cfg: &telegram::Config,
    presses: mpsc::Sender<ChatPress>,
) -> Result<JoinHandle<()>, Error> {
    let client = crate::notify::http::client(name, HumanDuration(POLL + cfg.timeout.0))?;
    let base = cfg.base_url.trim_end_matches('/').to_owned();
    let token = cfg.token.expose().to_owned();
    let poller = Poller {
        name: name.to_owned(),
        client,
        updates: format!("{base}/bot{token}/getUpdates"),
        answer: format!("{base}/bot{token}/answerCallbackQuery"),
        presses,
        failures: RateLimited::new(Duration::from_secs(60)),
    };
    tracing::info!(
        target_name = name,
        "polling Telegram for Ack button presses"
    );
    Ok(tokio::spawn(poller.run()))
}

struct Poller {
    name: String,
    client: reqwest::Client,
    /// URLs with the token in them: never logged.
    updates: String,
    answer: String,
    presses: mpsc::Sender<ChatPress>,
    failures: RateLimited,
}

impl Poller {
    async fn run(self) {
        let mut offset = 0i64;
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60), &self.name);
        loop {
            let started = Instant::now();
            match self.poll(offset).await {
                Ok(updates) => {
                    backoff.reset();
                    if updates.is_empty() && started.elapsed() < MIN_POLL {
                        tokio::time::sleep(MIN_POLL - started.elapsed()).await;
                    }
                    for u in updates {
                        offset = offset.max(u.update_id + 1);
                        if let Some(q) = u.callback_query {
                            self.pressed(q).await;
                        }
                    }
                }
                Err(e) => {
                    self.failures.hit(|suppressed| {
                        tracing::warn!(target_name = %self.name, error = %e, suppressed, "Telegram getUpdates failed; Ack buttons wait (a bot with a webhook set cannot be polled)");
                    });
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
        }
    }

    /// One `getUpdates`; the error never holds the URL (it holds the token).
    async fn poll(&self, offset: i64) -> Result<Vec<Update>, String> {
        let body = json!({"offset": offset, "timeout": POLL.as_secs(), "allowed_updates": ["callback_query"]});
        let resp = self
            .client
            .post(&self.updates)
            .json(&body)
            .send()
            .await
            .map_err(|e| e.without_url().to_string())?;
        let status = resp.status();
        let updates: Updates = resp
            .json()
            .await
            .map_err(|e| format!("HTTP {status}: {}", e.without_url()))?;
        if !updates.ok {
            return Err(format!(
                "HTTP {status}: {}",
                updates.description.unwrap_or_default()
            ));
        }
        Ok(updates.result)
    }

    /// Hands an `ack:<key>` press to the pipeline and answers it with the reply.
    async fn pressed(&self, q: CallbackQuery) {
        let text = match q.data.as_deref().and_then(|d| d.strip_prefix("ack:")) {
            Some(key) => self.ask(Alarm::Key(key.to_owned()), q.from.name()).await,
            None => "not a Lookout button".to_owned(),
        };
        let text: String = text.chars().take(MAX_TOAST).collect();
        let body = json!({"callback_query_id": q.id, "text": text});
        if let Err(e) = self.client.post(&self.answer).json(&body).send().await {
            tracing::warn!(target_name = %self.name, error = %e.without_url(), "Telegram answerCallbackQuery failed");
        }
    }

    async fn ask(&self, alarm: Alarm, by: String) -> String {
        let (answer, reply) = oneshot::channel::<Reply>();
        let press = ChatPress {
            alarm,
            by,
            via: "Telegram",
            answer,
        };
        if self.presses.send(press).await.is_err() {
            return "the bridge is stopping; try again".into();
        }
        match tokio::time::timeout(ANSWER_WAIT, reply).await {
            Ok(Ok(r)) if r.ok => format!("✓ {}", r.reason),
            Ok(Ok(r)) => format!("✗ {}", r.reason),
            _ => "no answer from the bridge; try again".into(),
        }
    }
}
