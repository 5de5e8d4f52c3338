//! The live view of `watch`: the MQTT loop on the runtime, the terminal (ratatui) on a
//! blocking thread, sharing the fleet behind one lock. Built with the cargo feature
//! `live-view`.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, Packet, SubscribeFilter};

use lookout_shared::time::{Backoff, now_ms};

use super::fleet::Fleet;
use super::{Options, RETRY_MIN, new_fleet, tui, why};
use crate::Error;

/// How often the live view redraws when no key is pressed.
const REDRAW_EVERY: Duration = Duration::from_millis(250);
/// The longest reconnect delay of the live view (its [`Backoff`] cap).
const RETRY_MAX: Duration = Duration::from_secs(5);

/// The connection as the live view shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Conn {
    Connecting,
    Connected,
    /// Lost or refused, with why; retrying.
    Lost(String),
}

/// What the MQTT task and the view share, behind one lock.
struct Shared {
    fleet: Fleet,
    conn: Conn,
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

/// The live view: the MQTT loop on this runtime, the terminal on a blocking thread, until
/// q/Esc/Ctrl-C, SIGINT or SIGTERM.
pub(super) async fn run(opts: &Options) -> Result<(), Error> {
    if !std::io::stdout().is_terminal() {
        return Err(Error::Config {
            path: "watch".into(),
            message: "the live view needs a terminal (stdout is not one); use --once for a \
                      plain-text snapshot"
                .into(),
        });
    }
    let shared = Arc::new(Mutex::new(Shared {
        fleet: new_fleet(opts),
        conn: Conn::Connecting,
    }));
    let (client, events) = AsyncClient::new(opts.mqtt_options(), 16);
    let url = opts.client.url.display();
    let backoff = Backoff::new(RETRY_MIN, RETRY_MAX, &url);
    let mut net = tokio::spawn(drive(
        events,
        client,
        opts.filters(),
        backoff,
        Arc::clone(&shared),
    ));
    let quit = Arc::new(AtomicBool::new(false));
    let mut ui = tokio::task::spawn_blocking({
        let (shared, quit, source) = (Arc::clone(&shared), Arc::clone(&quit), url);
        move || ui_loop(&shared, &quit, &source)
    });
    let result = tokio::select! {
        r = &mut ui => r,
        _ = lookout_shared::signal::shutdown() => {
            quit.store(true, Ordering::Relaxed);
            (&mut ui).await
        }
        _ = &mut net => {
            // The MQTT loop never ends by itself: it panicked. Stop the view too.
            quit.store(true, Ordering::Relaxed);
            (&mut ui).await
        }
    };
    net.abort();
    match result {
        Ok(r) => r,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Ok(()),
    }
}

/// The MQTT loop of the live view: subscribe on every connect, apply every message,
/// wait out `backoff` when the connection fails (reset by each successful connect).
async fn drive(
    mut events: EventLoop,
    client: AsyncClient,
    filters: Vec<SubscribeFilter>,
    mut backoff: Backoff,
    shared: Arc<Mutex<Shared>>,
) {
    loop {
        match events.poll().await {
            Ok(Event::Incoming(Packet::Publish(p))) => {
                lock(&shared)
                    .fleet
                    .apply(&p.topic, &p.payload, p.retain, now_ms());
            }
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                backoff.reset();
                lock(&shared).conn = Conn::Connected;
                let _ = client.try_subscribe_many(filters.clone());
            }
            Ok(_) => {}
            Err(e) => {
                lock(&shared).conn = Conn::Lost(why(&e));
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
}

/// Leaves raw mode and the alternate screen when dropped: on quitting, on an error, and
/// while a panic unwinds (ratatui's panic hook also restores before the message prints).
struct RestoreTerminal;

impl Drop for RestoreTerminal {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

fn ui_loop(shared: &Mutex<Shared>, quit: &AtomicBool, source: &str) -> Result<(), Error> {
    use crossterm::event::{self, Event as TermEvent};
    let _restore = RestoreTerminal;
    let mut terminal = ratatui::try_init().map_err(Error::Terminal)?;
    let mut view = tui::View::default();
    while !quit.load(Ordering::Relaxed) {
        {
            let s = lock(shared);
            terminal
                .draw(|f| tui::draw(f, &s.fleet, &s.conn, source, &mut view, now_ms()))
                .map_err(Error::Terminal)?;
        }
        if event::poll(REDRAW_EVERY).map_err(Error::Terminal)?
            && let TermEvent::Key(key) = event::read().map_err(Error::Terminal)?
            && view.on_key(key) == tui::Flow::Quit
        {
            break;
        }
    }
    Ok(())
}
