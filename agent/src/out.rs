//! What the agent publishes, as values: the tick loop, the rules and the health report
//! say what to send and the link decides how (QoS, retain, outbox). Nothing that decides
//! holds an MQTT handle, so it is all tested without a broker.

/// One message for a host's link.
#[derive(Clone, Debug, PartialEq)]
pub enum Out {
    /// A tick's metrics: QoS 0, the first to be dropped when the link is congested.
    Metrics { topic: String, payload: Vec<u8> },
    /// A model's score for one tick: QoS 0, dropped like metrics.
    Score { topic: String, payload: Vec<u8> },
    /// An alarm state (learned model or rule): QoS 1, retained, kept in the outbox until
    /// the broker has it, re-sent after reconnects.
    Alarm { topic: String, payload: Vec<u8> },
    /// Another retained state (the rules error): as an alarm.
    State { topic: String, payload: Vec<u8> },
    /// Stop re-sending a state after reconnects (it stays retained on the broker).
    Forget { topic: String },
    /// The simulator's ground truth: QoS 1, not retained.
    Truth { topic: String, payload: Vec<u8> },
    /// The agent's own report (`agent/stats`): retained, dropped when congested.
    Stats { topic: String, payload: Vec<u8> },
    /// An answer to an operator's command (`cmd/relearn/result`): QoS 1, not retained.
    Reply { topic: String, payload: Vec<u8> },
}

impl Out {
    pub fn topic(&self) -> &str {
        match self {
            Out::Metrics { topic, .. }
            | Out::Score { topic, .. }
            | Out::Alarm { topic, .. }
            | Out::State { topic, .. }
            | Out::Forget { topic }
            | Out::Truth { topic, .. }
            | Out::Stats { topic, .. }
            | Out::Reply { topic, .. } => topic,
        }
    }
}
