//! One host's tick as a function: its frame of samples (and the simulator's ground
//! truth) in, the messages to publish out ([`Out`]): metrics, every model's score and
//! alarm changes. No MQTT handle in sight: `run` hands the outputs to the host's link,
//! and the tests feed frames and read outputs without a broker.
//!
//! Each model's values go through [`Decider::step`], the same decision path `replay` runs.

use lookout_shared::codec::to_json;
use lookout_shared::payload::{AnomalyRate, Labels, Score, SimTruth};
use lookout_shared::topics;

use crate::alarm::AlarmParams;
use crate::alarm::publish::Publisher;
use crate::decide::attribution::dimension_names;
use crate::decide::host::{self, HostConfig, HostJudge};
use crate::decide::{Decider, Decision, ModelSpec, Refused, shape_key};
use crate::frame::Frame;
use crate::health::ModelsReport;
use crate::out::Out;
use crate::scorer::fit::Fitter;
use crate::scorer::model::TrainJob;

/// Ticks a model's metric may be missing before that is worth a warning.
const MISSING_WARN_AFTER: u32 = 5;

/// One model of one host, with everything its tick needs prepared at start.
struct ModelRun {
    name: String,
    metrics: Vec<(String, String)>,
    values: Vec<f64>,
    decider: Decider,
    /// What a snapshot of this model must have been taken for.
    shape: u64,
    score_topic: String,
    /// Consecutive ticks without this model's metrics; the warning goes out once, when a
    /// metric is still missing after a few ticks (rates appear only from the second).
    missing_ticks: u32,
}

/// One published host: its models, topics and labels.
pub struct Host {
    name: String,
    labels: Labels,
    metrics_topic: String,
    truth_topic: String,
    alarms: Publisher,
    models: Vec<ModelRun>,
    judge: HostJudge,
    rate_topic: String,
    /// Models anomalous at this tick (reused).
    anomalous: Vec<usize>,
    /// Of those, the models whose alarm fires at level 2 or more: the host's witnesses.
    confirmed: Vec<usize>,
}

impl Host {
    /// `host` and `alarm` (the `[detector.alarm]` the host-level alarm shares) set the
    /// host-level judgement.
    pub fn new(
        prefix: &str,
        name: &str,
        labels: &Labels,
        specs: &[ModelSpec],
        host: &HostConfig,
        alarm: AlarmParams,
    ) -> Self {
        let models: Vec<ModelRun> = specs
            .iter()
            .map(|s| ModelRun {
                name: s.name.clone(),
                metrics: s.metrics.clone(),
                values: vec![0.0; s.metrics.len()],
                decider: Decider::new(&s.detector, s.metrics.len())
                    .with_names(dimension_names(&s.metrics)),
                shape: shape_key(&s.detector, &s.metrics),
                score_topic: topics::score(prefix, name, &s.name),
                missing_ticks: 0,
            })
            .collect();
        Self {
            name: name.to_owned(),
            labels: labels.clone(),
            metrics_topic: topics::metrics(prefix, name),
            truth_topic: topics::sim_truth(prefix, name),
            alarms: Publisher::new(prefix, name, labels),
            judge: HostJudge::new(host, models.len(), alarm),
            rate_topic: topics::anomaly_rate(prefix, name),
            anomalous: Vec::with_capacity(models.len()),
            confirmed: Vec::with_capacity(models.len()),
            models,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// One tick: `index` is the host's place in the run (it keys the fits it asks
    /// `fitter` for).
    pub fn tick(
        &mut self,
        index: usize,
        frame: &Frame,
        truth: &[SimTruth],
        fitter: &mut dyn Fitter,
        out: &mut Vec<Out>,
    ) {
        for t in truth {
            tracing::info!(host = %t.host, metric = %t.metric, kind = %t.kind, start = t.start, end = t.end, "simulator injected an anomaly");
            out.push(Out::Truth {
                topic: self.truth_topic.clone(),
                payload: to_json(t),
            });
        }
        if !frame.samples.is_empty() {
            out.push(Out::Metrics {
                topic: self.metrics_topic.clone(),
                payload: metrics_json(&self.name, frame),
            });
        }
        let agreed = self.judge.agreed(frame.ts);
        self.anomalous.clear();
        self.confirmed.clear();
        for (mi, mr) in self.models.iter_mut().enumerate() {
            if !mr.take_values(&self.name, frame) {
                continue;
            }
            mr.decider.set_agreed(agreed);
            let (decision, _) = mr.decider.step(frame.ts, &mr.values, (index, mi), fitter);
            if let Decision::Scored(s) = &decision
                && s.level.is_some()
                && !s.young
            {
                self.anomalous.push(mi);
                if s.severity >= 2 {
                    self.confirmed.push(mi);
                }
            }
            mr.publish(decision, frame.ts, &self.alarms, &self.labels, out);
        }
        self.judge_host(frame.ts, out);
    }

    /// The host-level judgement of this tick: its anomaly rate, and its alarm's change.
    fn judge_host(&mut self, ts: i64, out: &mut Vec<Out>) {
        let h = self
            .judge
            .tick(ts, self.anomalous.iter().copied(), &self.confirmed);
        let names: Vec<&str> = h
            .anomalous
            .iter()
            .filter_map(|&i| self.models.get(i).map(|m| m.name.as_str()))
            .collect();
        let rate = AnomalyRate {
            ts,
            host: self.name.clone(),
            rate: h.rate,
            anomalous: names.iter().map(|s| (*s).to_owned()).collect(),
            models: self.models.len(),
            alarm: self.judge.is_firing(),
            labels: self.labels.clone(),
        };
        out.push(Out::Score {
            topic: self.rate_topic.clone(),
            payload: to_json(&rate),
        });
        if let Some(t) = h.transition {
            out.push(
                self.alarms
                    .publish(self.judge.episode(&self.name, ts, t, &names)),
            );
        }
    }

    /// An operator's order (the relearn command): model `model`, or every model for
    /// `"*"`, takes what it sees now as its new normal ([`Decider::relearn`]) at `ts`; a
    /// firing alarm resolves with reason `relearned`, published into `out` like any other
    /// alarm change. Returns the models that relearned and those whose alarm resolved, or,
    /// for a name the host has no model of, the names it has.
    pub fn relearn(
        &mut self,
        model: &str,
        ts: i64,
        out: &mut Vec<Out>,
    ) -> Result<(Vec<String>, Vec<String>), Vec<String>> {
        let all = model == "*";
        if !all && !self.models.iter().any(|m| m.name == model) {
            return Err(self.models.iter().map(|m| m.name.clone()).collect());
        }
        let (mut relearned, mut resolved) = (Vec::new(), Vec::new());
        for mr in self.models.iter_mut().filter(|m| all || m.name == model) {
            let score = mr.decider.model().score().unwrap_or(0.0);
            if let Some(t) = mr.decider.relearn(ts, score) {
                let episode = mr.decider.episode(&mr.name, &self.name, ts, t);
                out.push(self.alarms.publish(episode));
                resolved.push(mr.name.clone());
            }
            relearned.push(mr.name.clone());
        }
        Ok((relearned, resolved))
    }

    /// A fit of model `model` finished on the trainer thread: hands its staging buffer
    /// back (to the trainer's pool), or the job's own buffer when the model is gone.
    pub fn install(&mut self, model: usize, job: TrainJob) -> Box<[f32]> {
        match self.models.get_mut(model) {
            Some(mr) => mr.decider.model_mut().install(job),
            None => job.data,
        }
    }

    /// Every model's snapshot, taken at `now` (Unix ms): (model name, bytes), and the
    /// host judgement's (its alarm may be firing) as model [`host::NAME`].
    pub fn snapshots(&self, now: i64) -> Vec<(String, Vec<u8>)> {
        let mut out: Vec<(String, Vec<u8>)> = self
            .models
            .iter()
            .map(|m| (m.name.clone(), m.decider.snapshot(m.shape, now)))
            .collect();
        out.push((host::NAME.to_owned(), self.judge.snapshot(now)));
        out
    }

    /// What [`Host::snapshots`] saves, in order: the models, then [`host::NAME`].
    pub fn model_names(&self) -> impl Iterator<Item = &str> {
        self.models
            .iter()
            .map(|m| m.name.as_str())
            .chain(std::iter::once(host::NAME))
    }

    /// Takes back model `name`'s snapshot; returns when it was saved. A refused snapshot
    /// leaves the model as it was.
    pub fn restore(&mut self, name: &str, bytes: &[u8]) -> Result<i64, Refused> {
        if name == host::NAME {
            return self.judge.restore(bytes, self.models.len());
        }
        let Some(m) = self.models.iter_mut().find(|m| m.name == name) else {
            return Err(Refused::Shape);
        };
        m.decider.restore(bytes, m.shape)
    }

    pub fn models_report(&self) -> ModelsReport {
        let trained = |m: &&ModelRun| m.decider.model().is_trained();
        ModelsReport {
            learning: self.models.len() - self.models.iter().filter(trained).count(),
            ready: self.models.iter().filter(trained).count(),
            invalid_values: self.models.iter().map(|m| m.decider.invalid()).sum(),
        }
    }
}

impl ModelRun {
    /// Copies this model's values out of the frame; false while one is missing.
    fn take_values(&mut self, host: &str, frame: &Frame) -> bool {
        for (v, (chart, dim)) in self.values.iter_mut().zip(&self.metrics) {
            match frame.get(chart, dim) {
                Some(x) => *v = x,
                None => {
                    self.missing_ticks = self.missing_ticks.saturating_add(1);
                    if self.missing_ticks == MISSING_WARN_AFTER {
                        if crate::sampler::OPTIONAL_CHARTS.contains(&chart.as_str()) {
                            tracing::info!(host, model = %self.name, chart, dim, "optional metric not offered on this host; model waits for it (logged once)");
                        } else {
                            tracing::warn!(host, model = %self.name, chart, dim, "metric not available on this host; model waits for it (logged once)");
                        }
                    }
                    return false;
                }
            }
        }
        true
    }

    /// The score (unless `only_show_anomaly` hides it) and the alarm change, if any.
    fn publish(
        &self,
        decision: Decision,
        ts: i64,
        alarms: &Publisher,
        labels: &Labels,
        out: &mut Vec<Out>,
    ) {
        let to = Target {
            model: &self.name,
            device: None,
            score_topic: &self.score_topic,
            alarm_name: &self.name,
            values: &self.values,
        };
        publish_decision(&self.decider, &to, decision, ts, alarms, labels, out);
    }
}

/// Where one model's decisions are published: a host model's, or one device's instance
/// of a device model (`crate::devices`), which alarms under its own name and says which
/// device it learns.
pub struct Target<'a> {
    pub model: &'a str,
    pub device: Option<&'a str>,
    pub score_topic: &'a str,
    /// The name under `alarms/`: the model's, or `<model>/<device>`.
    pub alarm_name: &'a str,
    /// The tick's values, for the log of a refused tick.
    pub values: &'a [f64],
}

/// A model's decision as messages: the score (unless `only_show_anomaly` hides it) and
/// the alarm change, if any. One function for host and device models, so that both
/// publish the same payloads.
pub fn publish_decision(
    decider: &Decider,
    to: &Target<'_>,
    decision: Decision,
    ts: i64,
    alarms: &Publisher,
    labels: &Labels,
    out: &mut Vec<Out>,
) {
    let detector = decider.detector();
    let scored = match decision {
        Decision::Invalid => {
            let invalid = decider.invalid();
            // Once, then every 10,000th: a sensor stuck out of range must not flood the log.
            if invalid % 10_000 == 1 {
                tracing::warn!(host = alarms.host(), model = %to.model, device = to.device, values = ?to.values, invalid, down_limit = ?detector.down_limit, upper_limit = ?detector.upper_limit, "value outside the model's limits: not scored");
            }
            return;
        }
        Decision::Skipped => return,
        Decision::Learning => None,
        Decision::Scored(s) => Some(s),
    };
    let anomalous = scored.is_some_and(|s| s.level.is_some());
    if anomalous || !detector.only_show_anomaly {
        // Only an anomalous tick says which dimension: normal scores stay small.
        let attribution = anomalous.then(|| decider.attribution(to.model)).flatten();
        let (dimensions, explain) =
            attribution.map_or((Vec::new(), None), |a| (a.dimensions, Some(a.explain)));
        let msg = Score {
            ts,
            host: alarms.host().to_owned(),
            model: to.model.to_owned(),
            device: to.device.map(str::to_owned),
            score: scored.map(|s| s.score),
            learning: scored.is_none(),
            anomalous,
            level: scored.and_then(|s| s.level).unwrap_or(0),
            threshold: detector.alarm.threshold,
            alarm: scored.is_some_and(|s| s.firing),
            labels: labels.clone(),
            dimensions,
            explain,
        };
        out.push(Out::Score {
            topic: to.score_topic.to_owned(),
            payload: to_json(&msg),
        });
    }
    if let Some(t) = scored.and_then(|s| s.transition) {
        let mut episode = match to.device {
            // The summary names the device where a host model's names the host.
            Some(device) => {
                let mut e = decider.episode(to.model, device, ts, t);
                e.labels.insert("device".into(), device.to_owned());
                e
            }
            None => decider.episode(to.model, alarms.host(), ts, t),
        };
        episode.name = to.alarm_name.to_owned();
        out.push(alarms.publish(episode));
    }
}

/// `{"ts":…,"host":…,"metrics":{chart:{dim:value}}}` written straight from the frame;
/// samples of one chart are contiguous because each source pushes a chart at a time.
fn metrics_json(host: &str, frame: &Frame) -> Vec<u8> {
    use std::io::Write;
    let mut out = Vec::with_capacity(64 + frame.samples.len() * 24);
    let _ = write!(out, "{{\"ts\":{},\"host\":", frame.ts);
    let _ = serde_json::to_writer(&mut out, host);
    out.extend_from_slice(b",\"metrics\":{");
    let mut chart: Option<&str> = None;
    for s in &frame.samples {
        if chart != Some(&*s.chart) {
            if chart.is_some() {
                out.extend_from_slice(b"},");
            }
            let _ = serde_json::to_writer(&mut out, &*s.chart);
            out.extend_from_slice(b":{");
            chart = Some(&*s.chart);
        } else {
            out.push(b',');
        }
        let _ = serde_json::to_writer(&mut out, &*s.dim);
        out.push(b':');
        if s.value.is_finite() {
            let _ = serde_json::to_writer(&mut out, &s.value);
        } else {
            out.extend_from_slice(b"null");
        }
    }
    if chart.is_some() {
        out.push(b'}');
    }
    out.extend_from_slice(b"}}");
    out
}

#[cfg(test)]
mod tests;
