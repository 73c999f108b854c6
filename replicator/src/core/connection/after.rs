//! What follows a lost link: the connection retries, or stays down until `repadm connect`.

/// How a link ends: keep trying (`Reconnect`) or stay down until `repadm connect`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum After {
    Reconnect,
    StandAlone,
}
