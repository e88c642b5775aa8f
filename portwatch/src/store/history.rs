//! Reconciles a classification of a stored window with the per-interval entry records: an
//! entry the rebuilt flows show no use of (flow detail was bounded or pruned) but which the
//! interval records show used inside the window is used, not unused. Pure.
use crate::classify::{Finding, FindingKind, Findings};

use super::StoredWindow;

/// Turns each `unused` finding whose entry the history shows used inside the window into a
/// `documented` finding carrying the recorded traffic, and fixes the summary counts. Returns
/// how many findings changed.
pub fn apply_history(findings: &mut Findings, w: &StoredWindow) -> usize {
    let mut changed = 0;
    for f in &mut findings.findings {
        if !matches!(f.kind, FindingKind::Unused { .. }) {
            continue;
        }
        let Some(entry) = &f.entry else { continue };
        let mut traffic = crate::classify::Traffic::default();
        let mut used = false;
        for a in w
            .entries
            .iter()
            .filter(|a| a.entry_id == entry.id && a.is_use() && a.window_intervals > 0)
        {
            used = true;
            traffic.add(&a.window);
        }
        if !used {
            continue;
        }
        let mut d = Finding::new(FindingKind::Documented);
        d.entry = f.entry.take();
        d.transport = f.transport;
        d.traffic = traffic;
        *f = d;
        changed += 1;
    }
    if changed > 0 {
        let s = &mut findings.summary;
        let n = changed as u64;
        s.entries.unused = s.entries.unused.saturating_sub(n);
        s.entries.used += n;
        if let Some(k) = s.kinds.get_mut("unused") {
            *k = k.saturating_sub(n);
        }
        *s.kinds.entry("documented".to_owned()).or_default() += n;
        findings
            .findings
            .sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::{EntryRef, Summary, Traffic};
    use crate::store::EntryActivity;

    fn entry(id: &str) -> EntryRef {
        EntryRef {
            id: id.into(),
            service: id.to_uppercase(),
            ports: "22".into(),
            transport: "tcp".into(),
            direction: "inbound".into(),
            file: "s.toml".into(),
            line: 9,
        }
    }

    fn unused(id: &str) -> Finding {
        let mut f = Finding::new(FindingKind::Unused { note: None });
        f.entry = Some(entry(id));
        f
    }

    fn activity(id: &str, kind: &str, intervals: u64) -> EntryActivity {
        EntryActivity {
            entry_id: id.into(),
            service: id.to_uppercase(),
            kind: kind.into(),
            first_seen: 1,
            last_seen: 2,
            window: Traffic {
                flows: intervals,
                packets_in: 10 * intervals,
                ..Traffic::default()
            },
            window_intervals: intervals,
        }
    }

    #[test]
    fn an_entry_used_inside_the_window_per_the_records_is_not_unused() {
        let mut f = Findings {
            findings: vec![unused("ssh"), unused("ftp"), unused("old"), unused("wrong")],
            summary: Summary {
                kinds: [("unused".to_owned(), 4), ("documented".to_owned(), 0)].into(),
                ..Summary::default()
            },
            services: Vec::new(),
        };
        f.summary.entries.unused = 4;
        let w = StoredWindow {
            entries: vec![
                activity("ssh", "documented", 3),
                // Used before the window only: stays unused.
                activity("old", "documented", 0),
                // Traffic that broke the rule is not use of the entry.
                activity("wrong", "wrong_direction", 2),
            ],
            ..StoredWindow::default()
        };
        assert_eq!(apply_history(&mut f, &w), 1);
        let ssh = f
            .findings
            .iter()
            .find(|x| x.entry.as_ref().unwrap().id == "ssh")
            .unwrap();
        assert_eq!(ssh.kind, FindingKind::Documented);
        assert_eq!(ssh.traffic.packets_in, 30);
        let still: Vec<&str> = f
            .findings
            .iter()
            .filter(|x| matches!(x.kind, FindingKind::Unused { .. }))
            .map(|x| x.entry.as_ref().unwrap().id.as_str())
            .collect();
        assert_eq!(still, vec!["ftp", "old", "wrong"]);
        assert_eq!((f.summary.entries.unused, f.summary.entries.used), (3, 1));
        assert_eq!(f.summary.kinds["unused"], 3);
        assert_eq!(f.summary.kinds["documented"], 1);
    }
}
