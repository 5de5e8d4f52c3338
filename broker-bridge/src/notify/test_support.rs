//! What the plugins' tests share besides the test HTTP server (`test_server`, which is
//! `tests/common/http.rs`, shared with the end-to-end tests).

use serde_json::json;

use crate::notify::Notification;

/// A firing alarm as the agent publishes it (`docs/topics.md`), already rendered.
pub(crate) fn alarm() -> Notification {
    let fields = json!({
        "id": "sim-1:cpu_util:1795457375316", "host": "sim-1", "source": "cpu_util",
        "state": "firing", "severity": 3, "ts": 1795457376316_u64, "started_at": 1795457375316_u64,
        "score": 4.1, "threshold": 2.0,
        "summary": "cpu_util: anomaly score 4.10 >= 2.00 on sim-1 (severity 3)",
        "labels": {"ip": "10.0.0.1"}
    });
    Notification {
        target: "test".into(),
        topic: "lookout/sim-1/alarms/cpu_util".into(),
        title: "[firing] sim-1 cpu_util".into(),
        body: "cpu_util: anomaly score 4.10 >= 2.00 on sim-1 (severity 3)".into(),
        raw: fields.to_string().into_bytes(),
        fields,
    }
}
