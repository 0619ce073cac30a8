//! `runlens top`: the live view of the machine and the agents' work.
//!
//! States come from the sidecar's `WatchActivity` stream (or, with `--local`, from this
//! machine's own sampler) into a [`View`], which the terminal draws on every new state and
//! key. Not on a terminal, one frame is printed as text: scripts and CI can read it.

mod view;

use std::io::IsTerminal;
use std::time::Duration;

use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::crossterm::{execute, terminal};
use runlens_api::pb;
use runlens_api::pb::runlens_client::RunlensClient;
use tokio::sync::watch;

use crate::cli::TopArgs;
use crate::exit::{FAILURE, Failure, UNAVAILABLE};
use view::{Key, View};

/// What the feed task last got: a state, or why there is none.
type Latest = Option<Result<pb::Activity, String>>;

/// How long the one-frame output waits for a first state.
const FIRST_STATE_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs the live view until `q` (or prints one frame when stdout is not a terminal).
pub fn run(args: TopArgs) -> Result<(), Failure> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| Failure::new(FAILURE, format!("cannot start the runtime: {e}")))?;
    let source = if args.local {
        "this machine (--local)".to_owned()
    } else {
        args.endpoint.clone()
    };
    let (tx, rx) = watch::channel::<Latest>(None);
    if args.local {
        let (sampler, _) = super::build_sampler(&args.probe)?;
        runtime.spawn(feed_local(sampler, args.interval, tx));
    } else {
        runtime.spawn(feed_remote(args_for_feed(&args), tx));
    }
    let mut view = View::new(source);
    view.local = args.local;
    if std::io::stdout().is_terminal() {
        interactive(view, rx)
    } else {
        runtime.block_on(one_frame(view, rx))
    }
}

/// What the remote feed needs from the arguments.
struct FeedArgs {
    endpoint: String,
    token: Option<String>,
    ca_file: Option<std::path::PathBuf>,
    request: pb::WatchActivityRequest,
}

fn args_for_feed(args: &TopArgs) -> FeedArgs {
    FeedArgs {
        endpoint: args.endpoint.clone(),
        token: args.token.clone(),
        ca_file: args.ca_file.clone(),
        request: pb::WatchActivityRequest {
            interval_ms: u32::try_from(args.interval.as_millis()).unwrap_or(u32::MAX),
            oom_threshold_bytes: args.oom_threshold_mib.saturating_mul(1 << 20),
        },
    }
}

/// Streams the sidecar's states into `tx`, reconnecting a second after any failure.
async fn feed_remote(args: FeedArgs, tx: watch::Sender<Latest>) {
    loop {
        let failure = match watch_once(&args, &tx).await {
            Ok(()) => "the sidecar ended the stream".to_owned(),
            Err(e) => e,
        };
        if tx.send(Some(Err(failure))).is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn watch_once(args: &FeedArgs, tx: &watch::Sender<Latest>) -> Result<(), String> {
    let mut builder = runlens_client::Client::builder(args.endpoint.clone());
    if let Some(token) = &args.token {
        builder = builder.token(token.clone());
    }
    if let Some(ca) = &args.ca_file {
        builder = builder.ca_file(ca.clone());
    }
    let connection = builder.connect_rpc().await.map_err(|e| e.to_string())?;
    let mut stream = RunlensClient::new(connection.channel.clone())
        .watch_activity(connection.request(args.request))
        .await
        .map_err(|s| describe(&s))?
        .into_inner();
    while let Some(state) = stream.message().await.map_err(|s| describe(&s))? {
        if tx.send(Some(Ok(state))).is_err() {
            return Ok(());
        }
    }
    Ok(())
}

/// A gRPC status for a person.
fn describe(status: &tonic::Status) -> String {
    match status.code() {
        tonic::Code::Unauthenticated => format!(
            "the sidecar wants a token: {} (set RUNLENS_TOKEN or --token)",
            status.message()
        ),
        tonic::Code::Unimplemented => {
            "this sidecar is older than `runlens top` (no WatchActivity): upgrade it".to_owned()
        }
        _ => format!("{}: {}", status.code(), status.message()),
    }
}

/// Samples this machine every `interval` into `tx` (GPUs and host; no agents).
async fn feed_local(
    mut sampler: probe_core::Sampler,
    interval: Duration,
    tx: watch::Sender<Latest>,
) {
    let mut ticker = tokio::time::interval(interval);
    loop {
        ticker.tick().await;
        let (back, snapshot) = match tokio::task::spawn_blocking(move || {
            let s = sampler.sample();
            (sampler, s)
        })
        .await
        {
            Ok(pair) => pair,
            Err(_) => return,
        };
        sampler = back;
        let state = pb::Activity {
            at_ns: snapshot.taken_at_ns,
            snapshot: Some(crate::service::to_wire::snapshot_to_wire(&snapshot, 0)),
            ..Default::default()
        };
        if tx.send(Some(Ok(state))).is_err() {
            return;
        }
    }
}

/// Prints one frame as text, sized by `$COLUMNS`/`$LINES` (100×40 when unset).
async fn one_frame(mut view: View, mut rx: watch::Receiver<Latest>) -> Result<(), Failure> {
    let first = tokio::time::timeout(FIRST_STATE_TIMEOUT, async {
        loop {
            if rx.changed().await.is_err() {
                return None;
            }
            if let Some(latest) = rx.borrow_and_update().clone() {
                return Some(latest);
            }
        }
    })
    .await;
    match first {
        Ok(Some(Ok(state))) => view.update(state),
        Ok(Some(Err(e))) => return Err(Failure::new(UNAVAILABLE, format!("runlens top: {e}"))),
        Ok(None) | Err(_) => {
            return Err(Failure::new(
                UNAVAILABLE,
                format!(
                    "runlens top: no state from {} within {} s",
                    view.source,
                    FIRST_STATE_TIMEOUT.as_secs()
                ),
            ));
        }
    }
    let size = |name: &str, default: u16| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse::<u16>().ok())
            .filter(|v| *v >= 20)
            .unwrap_or(default)
    };
    let (width, height) = (size("COLUMNS", 100), size("LINES", 40));
    let text = view::render_text(&view, width, height)
        .map_err(|e| Failure::new(FAILURE, e.to_string()))?;
    crate::format::emit(text.trim_end())
}

/// Puts the terminal back: raw mode off, main screen, cursor shown.
fn restore_terminal() {
    let _ = terminal::disable_raw_mode();
    let _ = execute!(
        std::io::stdout(),
        terminal::LeaveAlternateScreen,
        ratatui::crossterm::cursor::Show
    );
}

/// The live screen until `q` or Ctrl-C; the terminal is restored on every way out,
/// a panic included.
fn interactive(mut view: View, mut rx: watch::Receiver<Latest>) -> Result<(), Failure> {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        restore_terminal();
        previous(info);
    }));
    let fail = |e: std::io::Error| Failure::new(FAILURE, format!("terminal: {e}"));
    terminal::enable_raw_mode().map_err(fail)?;
    if let Err(e) = execute!(std::io::stdout(), terminal::EnterAlternateScreen) {
        restore_terminal();
        return Err(fail(e));
    }
    let result = (|| -> std::io::Result<()> {
        let mut terminal = Terminal::new(CrosstermBackend::new(std::io::stdout()))?;
        terminal.clear()?;
        loop {
            if rx.has_changed().unwrap_or(false) {
                match rx.borrow_and_update().clone() {
                    Some(Ok(state)) => view.update(state),
                    Some(Err(e)) => view.error = Some(e),
                    None => {}
                }
            }
            terminal.draw(|f| view.draw(f))?;
            if event::poll(Duration::from_millis(200))? {
                let key = match event::read()? {
                    Event::Key(k) if k.kind != KeyEventKind::Release => match k.code {
                        KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => {
                            Some(Key::Interrupt)
                        }
                        KeyCode::Char(c) => Some(Key::Char(c)),
                        KeyCode::Enter => Some(Key::Enter),
                        KeyCode::Esc => Some(Key::Esc),
                        KeyCode::Backspace => Some(Key::Backspace),
                        KeyCode::Up => Some(Key::Up),
                        KeyCode::Down => Some(Key::Down),
                        _ => None,
                    },
                    _ => None,
                };
                if let Some(key) = key
                    && !view.key(key)
                {
                    return Ok(());
                }
            }
        }
    })();
    restore_terminal();
    result.map_err(fail)
}
