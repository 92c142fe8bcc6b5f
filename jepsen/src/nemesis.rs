//! The nemesis: faults, and the seeded schedule that applies them.
//!
//! The schedule alternates quiet periods and fault windows until the workload
//! ends: wait `quiet`, pick one of the enabled [`Nemesis`] kinds (seeded),
//! apply it, keep it for `window`, heal it. Every window becomes a
//! [`FaultRecord`] in the history (and a shaded band in the report). At the
//! end everything is healed (members resumed and restarted, the proxy healed)
//! so that the final reads see the whole cluster.
//!
//! | nemesis      | fault                                                          | heal                      |
//! |--------------|----------------------------------------------------------------|---------------------------|
//! | `kill`       | kill -9 the leader or a random member                          | restart it                |
//! | `pause`      | SIGSTOP the leader or a random member                          | SIGCONT                   |
//! | `partition`  | isolate the leader's zone / a random zone, or a one-way cut    | heal the proxy            |
//! | `zone-loss`  | a whole zone: its members killed and its links cut             | restart, heal             |
//! | `slow`       | +50..200 ms on every link of a random zone                     | heal the proxy            |
//! | `membership` | remove a member, wipe it, add it back as a learner, promote    | (done within the window)  |
//! | `compaction` | compact to an old revision, defragment a member, under load    | (instant)                 |

use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use tokio::sync::watch;

use crate::cluster::Cluster;
use crate::history::{FaultRecord, Record, Recorder};
use crate::rng::Rng;

/// The kinds of fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nemesis {
    Kill,
    Pause,
    Partition,
    ZoneLoss,
    Slow,
    Membership,
    Compaction,
}

impl Nemesis {
    /// Every kind, in the order of the table above.
    pub const ALL: [Nemesis; 7] = [
        Nemesis::Kill,
        Nemesis::Pause,
        Nemesis::Partition,
        Nemesis::ZoneLoss,
        Nemesis::Slow,
        Nemesis::Membership,
        Nemesis::Compaction,
    ];

    /// The name used on the command line and in the history.
    pub fn name(self) -> &'static str {
        match self {
            Nemesis::Kill => "kill",
            Nemesis::Pause => "pause",
            Nemesis::Partition => "partition",
            Nemesis::ZoneLoss => "zone-loss",
            Nemesis::Slow => "slow",
            Nemesis::Membership => "membership",
            Nemesis::Compaction => "compaction",
        }
    }

    /// Parses a comma-separated list (`none` for no fault, `all` for all).
    pub fn parse_list(text: &str) -> Result<Vec<Nemesis>> {
        let mut out = Vec::new();
        for name in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match name {
                "none" => {}
                "all" => out.extend(Nemesis::ALL),
                _ => out.push(
                    Nemesis::ALL
                        .into_iter()
                        .find(|n| n.name() == name)
                        .ok_or_else(|| {
                            anyhow!(
                                "unknown nemesis {name:?}; known: {}, all, none",
                                Nemesis::ALL.map(Nemesis::name).join(", ")
                            )
                        })?,
                ),
            }
        }
        out.dedup();
        Ok(out)
    }
}

/// When faults happen.
#[derive(Clone, Debug)]
pub struct Schedule {
    /// Enabled kinds; empty = no faults.
    pub kinds: Vec<Nemesis>,
    /// Quiet time before each fault (uniform in the range).
    pub quiet: (Duration, Duration),
    /// How long a fault lasts (uniform in the range).
    pub window: (Duration, Duration),
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule {
            kinds: Vec::new(),
            quiet: (Duration::from_secs(2), Duration::from_secs(4)),
            window: (Duration::from_secs(3), Duration::from_secs(6)),
        }
    }
}

fn uniform(rng: &mut Rng, (lo, hi): (Duration, Duration)) -> Duration {
    let lo_ms = lo.as_millis() as u64;
    let hi_ms = hi.as_millis().max(lo.as_millis()) as u64;
    Duration::from_millis(rng.between(lo_ms, hi_ms))
}

/// What a fault did, to undo it.
enum Undo {
    Restart(Vec<usize>),
    Resume(usize),
    HealProxy,
    RestartAndHeal(Vec<usize>),
    Nothing,
}

/// Runs the schedule until `stop` turns true, then heals everything.
/// Returns the cluster (healed) for the final phase, and every member exit
/// nobody asked for (a crash: the run is then invalid).
pub async fn run(
    mut cluster: Cluster,
    schedule: Schedule,
    mut rng: Rng,
    recorder: Recorder,
    mut stop: watch::Receiver<bool>,
) -> (Cluster, Vec<String>) {
    let mut crashes = Vec::new();
    if !schedule.kinds.is_empty() {
        loop {
            let quiet = uniform(&mut rng, schedule.quiet);
            if wait_or_stop(&mut stop, quiet).await {
                break;
            }
            let Some(&kind) = rng.pick(&schedule.kinds) else {
                break;
            };
            let window = uniform(&mut rng, schedule.window);
            let start = recorder.now();
            let (detail, targets, undo) = match apply(&mut cluster, kind, &mut rng, window).await {
                Ok(done) => done,
                Err(e) => {
                    tracing::warn!(nemesis = kind.name(), error = %e, "fault not applied");
                    (
                        format!("{} failed: {e:#}", kind.name()),
                        vec![],
                        Undo::Nothing,
                    )
                }
            };
            tracing::info!(nemesis = kind.name(), %detail, "fault");
            let instant = matches!(undo, Undo::Nothing);
            if !instant {
                wait_or_stop(&mut stop, window).await;
            }
            if let Err(e) = heal(&mut cluster, undo).await {
                tracing::warn!(nemesis = kind.name(), error = %e, "heal failed");
            }
            recorder.record(Record::Fault(FaultRecord {
                name: kind.name().into(),
                detail,
                targets,
                start,
                end: Some(recorder.now()),
            }));
            record_crashes(&mut cluster, &recorder, &mut crashes);
            if *stop.borrow() {
                break;
            }
        }
    } else {
        let _ = stop.wait_for(|s| *s).await;
    }
    record_crashes(&mut cluster, &recorder, &mut crashes);
    heal_all(&mut cluster).await;
    (cluster, crashes)
}

/// Members that exited on their own: recorded (a zero-length "crash"
/// window) and returned.
fn record_crashes(cluster: &mut Cluster, recorder: &Recorder, crashes: &mut Vec<String>) {
    for (i, what) in cluster.reap() {
        tracing::error!(member = %cluster.members()[i].name, %what, "a member exited on its own");
        let now = recorder.now();
        recorder.record(Record::Fault(FaultRecord {
            name: "crash".into(),
            detail: what.lines().next().unwrap_or_default().to_string(),
            targets: vec![cluster.members()[i].name.clone()],
            start: now,
            end: Some(now),
        }));
        crashes.push(what);
    }
}

/// Sleeps `d` or until stop; true if stopped.
async fn wait_or_stop(stop: &mut watch::Receiver<bool>, d: Duration) -> bool {
    if *stop.borrow() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = stop.wait_for(|s| *s) => true,
    }
}

/// Members that run and are not paused.
fn live(cluster: &Cluster) -> Vec<usize> {
    (0..cluster.members().len())
        .filter(|&i| cluster.is_running(i) && !cluster.is_paused(i))
        .collect()
}

/// The leader (half the time) or a random live member.
async fn victim(cluster: &Cluster, rng: &mut Rng) -> Result<(usize, bool)> {
    if rng.chance(0.5) {
        if let Some(leader) = cluster.leader().await {
            return Ok((leader, true));
        }
    }
    let live = live(cluster);
    let i = *rng.pick(&live).ok_or_else(|| anyhow!("no live member"))?;
    let is_leader = cluster.leader().await == Some(i);
    Ok((i, is_leader))
}

fn describe(cluster: &Cluster, i: usize, leader: bool) -> String {
    let m = &cluster.members()[i];
    format!(
        "{} ({}{})",
        m.name,
        m.zone,
        if leader { ", leader" } else { "" }
    )
}

async fn apply(
    cluster: &mut Cluster,
    kind: Nemesis,
    rng: &mut Rng,
    window: Duration,
) -> Result<(String, Vec<String>, Undo)> {
    match kind {
        Nemesis::Kill => {
            let (i, leader) = victim(cluster, rng).await?;
            cluster.kill(i).await?;
            let name = cluster.members()[i].name.clone();
            Ok((
                format!("kill -9 {}", describe(cluster, i, leader)),
                vec![name],
                Undo::Restart(vec![i]),
            ))
        }
        Nemesis::Pause => {
            let (i, leader) = victim(cluster, rng).await?;
            cluster.pause(i)?;
            let name = cluster.members()[i].name.clone();
            Ok((
                format!("SIGSTOP {}", describe(cluster, i, leader)),
                vec![name],
                Undo::Resume(i),
            ))
        }
        Nemesis::Partition => {
            let zones = cluster.zones().to_vec();
            let leader = cluster.leader().await;
            let leader_zone = leader.map(|i| cluster.members()[i].zone.clone());
            match rng.below(3) {
                0 => {
                    let zone = leader_zone
                        .or_else(|| rng.pick(&zones).cloned())
                        .ok_or_else(|| anyhow!("no zone"))?;
                    cluster.proxy().isolate(&zone);
                    Ok((
                        format!("isolate the leader's zone {zone}"),
                        vec![zone],
                        Undo::HealProxy,
                    ))
                }
                1 => {
                    let zone = rng
                        .pick(&zones)
                        .cloned()
                        .ok_or_else(|| anyhow!("no zone"))?;
                    cluster.proxy().isolate(&zone);
                    Ok((format!("isolate zone {zone}"), vec![zone], Undo::HealProxy))
                }
                _ => {
                    // One-way: the leader's zone can no longer send to the
                    // others (but hears them), which is what asymmetric
                    // faults look like to raft: followers time out and elect,
                    // the old leader must notice and step down.
                    let from = leader_zone
                        .or_else(|| rng.pick(&zones).cloned())
                        .ok_or_else(|| anyhow!("no zone"))?;
                    for to in zones.iter().filter(|z| **z != from) {
                        cluster.proxy().block(&from, to);
                    }
                    Ok((
                        format!("one-way: {from} cannot send to the other zones"),
                        vec![from],
                        Undo::HealProxy,
                    ))
                }
            }
        }
        Nemesis::ZoneLoss => {
            let zones = cluster.zones().to_vec();
            let zone = rng
                .pick(&zones)
                .cloned()
                .ok_or_else(|| anyhow!("no zone"))?;
            let victims: Vec<usize> = (0..cluster.members().len())
                .filter(|&i| cluster.members()[i].zone == zone)
                .collect();
            cluster.proxy().isolate(&zone);
            for &i in &victims {
                cluster.kill(i).await?;
            }
            let names = victims
                .iter()
                .map(|&i| cluster.members()[i].name.clone())
                .collect::<Vec<_>>();
            Ok((
                format!(
                    "zone {zone} lost: {} killed, its links cut",
                    names.join(", ")
                ),
                vec![zone],
                Undo::RestartAndHeal(victims),
            ))
        }
        Nemesis::Slow => {
            let zones = cluster.zones().to_vec();
            let zone = rng
                .pick(&zones)
                .cloned()
                .ok_or_else(|| anyhow!("no zone"))?;
            let extra = Duration::from_millis(rng.between(50, 200));
            for other in zones.iter().filter(|z| **z != zone) {
                cluster.proxy().slow(&zone, other, extra);
                cluster.proxy().slow(other, &zone, extra);
            }
            Ok((
                format!("links of {zone} slowed by {} ms", extra.as_millis()),
                vec![zone],
                Undo::HealProxy,
            ))
        }
        Nemesis::Membership => {
            let detail = membership_change(cluster, rng, window).await?;
            Ok((detail.0, detail.1, Undo::Nothing))
        }
        Nemesis::Compaction => {
            let live = live(cluster);
            let i = *rng.pick(&live).ok_or_else(|| anyhow!("no live member"))?;
            let admin = cluster.admin(i).await?;
            let status = admin.status().await.context("status")?;
            let revision = status.header.map(|h| h.revision).unwrap_or_default();
            // Keep the last ~100 revisions so that most resuming watchers
            // still find their history; older ones must get "compacted".
            let target = (revision - 100).max(1);
            let mut detail = format!("compact to {target}");
            match admin.compact(target, true).await {
                Ok(_) => {}
                Err(e) => detail.push_str(&format!(" ({e})")),
            }
            let j = *rng.pick(&live).ok_or_else(|| anyhow!("no live member"))?;
            let defrag = cluster.admin(j).await?;
            match defrag.defragment().await {
                Ok(_) => detail.push_str(&format!(", defragment {}", cluster.members()[j].name)),
                Err(e) => detail.push_str(&format!(", defragment failed: {e}")),
            }
            Ok((detail, vec![], Undo::Nothing))
        }
    }
}

/// Removes a member, wipes it, adds it back as a learner and promotes it.
/// Each step is retried (through any live member) until it is known to have
/// happened, since a membership write can end with an unknown outcome (for
/// instance when the removed member was the leader).
async fn membership_change(
    cluster: &mut Cluster,
    rng: &mut Rng,
    window: Duration,
) -> Result<(String, Vec<String>)> {
    let live = live(cluster);
    if live.len() < cluster.members().len() {
        return Ok(("membership change skipped: a member is down".into(), vec![]));
    }
    let i = *rng.pick(&live).ok_or_else(|| anyhow!("no live member"))?;
    let was_leader = cluster.leader().await == Some(i);
    let name = cluster.members()[i].name.clone();
    let peer_url = cluster.members()[i].peer_url();
    let others: Vec<usize> = live.iter().copied().filter(|&j| j != i).collect();
    let deadline = tokio::time::Instant::now() + window.max(Duration::from_secs(30));
    let mut notes = Vec::new();

    // 1. Remove (until the member list no longer has it).
    let id = loop {
        if let Some(id) = member_id(cluster, &others, &peer_url).await {
            break id;
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("{name} not found in the member list");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    loop {
        let j = *rng
            .pick(&others)
            .ok_or_else(|| anyhow!("need two members"))?;
        if let Err(e) = cluster.admin(j).await?.member_remove(id).await {
            notes.push(format!("remove via {}: {e}", cluster.members()[j].name));
        }
        if member_id(cluster, &others, &peer_url).await.is_none() {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("{name} could not be removed: {}", notes.join("; "));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // From here until it is added back, the member must not be restarted
    // from its old data (it would try to rejoin with its old id).
    cluster.set_removed(i, true);
    cluster.kill(i).await?;
    cluster.wipe(i)?;

    // 2. Add it back as a learner (until the member list has its URL).
    let new_id = loop {
        if let Some(id) = member_id(cluster, &others, &peer_url).await {
            break id;
        }
        let j = *rng
            .pick(&others)
            .ok_or_else(|| anyhow!("need two members"))?;
        if let Err(e) = cluster
            .admin(j)
            .await?
            .member_add(vec![peer_url.clone()], true)
            .await
        {
            notes.push(format!("add via {}: {e}", cluster.members()[j].name));
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok((
                format!(
                    "{name} removed and wiped, but could not be added back: {}",
                    notes.join("; ")
                ),
                vec![name],
            ));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    cluster.set_removed(i, false);
    cluster.join(i)?;

    // 3. Promote once it has caught up ("learner not in sync" until then).
    loop {
        let j = *rng
            .pick(&others)
            .ok_or_else(|| anyhow!("need two members"))?;
        match cluster.admin(j).await?.member_promote(new_id).await {
            Ok(_) => break,
            // Already a voter (an earlier attempt whose answer was lost).
            // Not to be confused with "... which is in sync with leader".
            Err(e)
                if e.status().map(|s| s.message())
                    == Some("etcdserver: can only promote a learner member") =>
            {
                break
            }
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::debug!(error = %e, "promote not yet");
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            Err(e) => {
                return Ok((
                    format!(
                    "{name} removed, wiped, re-added as learner {new_id:x}; promote failed: {e}"
                ),
                    vec![name],
                ))
            }
        }
    }
    let leader_note = if was_leader {
        " (it was the leader)"
    } else {
        ""
    };
    Ok((
        format!("{name}{leader_note} removed, wiped, re-added as learner {new_id:x}, promoted"),
        vec![name],
    ))
}

/// The id of the member with `peer_url`, asked of `members` in turn.
async fn member_id(cluster: &Cluster, members: &[usize], peer_url: &str) -> Option<u64> {
    for &j in members {
        let Ok(admin) = cluster.admin(j).await else {
            continue;
        };
        let Ok(Ok(list)) = tokio::time::timeout(Duration::from_secs(2), admin.member_list()).await
        else {
            continue;
        };
        return list
            .members
            .iter()
            .find(|m| m.peer_ur_ls.iter().any(|u| u == peer_url))
            .map(|m| m.id);
    }
    None
}

async fn heal(cluster: &mut Cluster, undo: Undo) -> Result<()> {
    match undo {
        Undo::Restart(members) => {
            for i in members {
                cluster.restart(i)?;
            }
        }
        Undo::Resume(i) => cluster.resume(i)?,
        Undo::HealProxy => cluster.proxy().heal(),
        Undo::RestartAndHeal(members) => {
            cluster.proxy().heal();
            for i in members {
                cluster.restart(i)?;
            }
        }
        Undo::Nothing => {}
    }
    Ok(())
}

/// Undoes everything: resume, restart, heal the network.
pub async fn heal_all(cluster: &mut Cluster) {
    cluster.proxy().heal();
    for i in 0..cluster.members().len() {
        if let Err(e) = cluster.resume(i) {
            tracing::warn!(error = %e, "resume failed");
        }
        if let Err(e) = cluster.restart(i) {
            tracing::warn!(error = %e, "restart failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nemesis_lists_parse() -> Result<()> {
        assert_eq!(
            Nemesis::parse_list("kill,partition")?,
            vec![Nemesis::Kill, Nemesis::Partition]
        );
        assert_eq!(Nemesis::parse_list("none")?, vec![]);
        assert_eq!(Nemesis::parse_list("all")?.len(), Nemesis::ALL.len());
        let err = Nemesis::parse_list("kill,flood")
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("unknown nemesis \"flood\"")));
        Ok(())
    }

    #[test]
    fn the_schedule_is_fixed_by_the_seed() {
        let pick = |seed| {
            let mut rng = Rng::new(seed);
            let kinds = Nemesis::ALL;
            (0..20)
                .map(|_| {
                    let q = uniform(&mut rng, (Duration::from_secs(2), Duration::from_secs(4)));
                    (q, *rng.pick(&kinds).unwrap_or(&Nemesis::Kill))
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(pick(9), pick(9));
        assert_ne!(pick(9), pick(10));
    }
}
