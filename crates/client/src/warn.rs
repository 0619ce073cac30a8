//! Warnings the agent's author must see even without a tracing subscriber.

/// Says `message` through `tracing` when the application installed a subscriber, and on
/// standard error otherwise: a client that buffers or loses data must never do so silently.
pub fn warn(message: &str) {
    if tracing::dispatcher::has_been_set() {
        tracing::warn!("{message}");
    } else {
        eprintln!("runlens client: {message}");
    }
}
