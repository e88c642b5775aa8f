//! The page's traffic-per-service section: the SVG chart of bytes over time (one line per
//! service, told apart by colour, dash and marker) and the table of durations and sizes.
use std::fmt::Write as _;

use super::*;
pub(super) fn services_table(s: &mut String, services: &[ServiceStats]) {
    if services.is_empty() {
        return;
    }
    // The documented services (bounded by the spec) and the busiest others: a report with
    // thousands of undocumented subjects keeps a table a reader can take in.
    let mut shown: Vec<&ServiceStats> = services.iter().collect();
    if shown.len() > SERVICES_TABLE {
        shown.sort_by(|a, b| {
            (a.entries.is_empty().cmp(&b.entries.is_empty()))
                .then_with(|| b.series.total_bytes().cmp(&a.series.total_bytes()))
                .then_with(|| b.duration_us.count.cmp(&a.duration_us.count))
                .then_with(|| a.service.cmp(&b.service))
        });
        shown.truncate(SERVICES_TABLE);
        shown.sort_by(|a, b| a.service.cmp(&b.service));
    }
    s.push_str("<h3>Flow duration and size per service</h3>\n<table class=\"services\"><thead><tr><th>Service</th><th class=\"r\">Flows</th><th class=\"r\">Bytes</th><th>Duration p50 / p90 / p99 / max</th><th>Bytes per flow p50 / p90 / p99 / max</th></tr></thead><tbody>\n");
    for x in &shown {
        let (d, b) = (&x.duration_us, &x.bytes);
        let total = if x.series.is_empty() {
            "-".to_owned()
        } else {
            units::bytes(x.series.total_bytes())
        };
        let _ = writeln!(
            s,
            "<tr><td>{}</td><td class=\"r\">{}</td><td class=\"r\">{total}</td><td>{} / {} / {} / {}</td><td>{} / {} / {} / {}</td></tr>",
            esc(&x.service),
            d.count,
            units::micros(d.p50),
            units::micros(d.p90),
            units::micros(d.p99),
            units::micros(d.max),
            units::bytes(b.p50),
            units::bytes(b.p90),
            units::bytes(b.p99),
            units::bytes(b.max),
        );
    }
    s.push_str("</tbody></table>\n");
    if services.len() > shown.len() {
        let _ = writeln!(
            s,
            "<p class=\"note\">{} more services (the quieter undocumented subjects) are in the embedded JSON report.</p>",
            services.len() - shown.len()
        );
    }
}

/// Line styles: colour, dash pattern and marker differ together, so lines are told apart
/// without colour.
const STYLES: [(&str, &str, Marker); CHART_SERIES + 1] = [
    ("#1f5fa8", "", Marker::Circle),
    ("#c0392b", "8 4", Marker::Square),
    ("#1e8449", "2 3", Marker::Triangle),
    ("#8e44ad", "10 3 2 3", Marker::Diamond),
    ("#b9770e", "4 4", Marker::Cross),
    ("#117a8b", "12 4 2 4 2 4", Marker::Plus),
    ("#555555", "1 2", Marker::Bar),
];

#[derive(Clone, Copy)]
enum Marker {
    Circle,
    Square,
    Triangle,
    Diamond,
    Cross,
    Plus,
    Bar,
}

fn marker(s: &mut String, m: Marker, x: f64, y: f64, colour: &str) {
    let _ = match m {
        Marker::Circle => write!(
            s,
            "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"3\" fill=\"{colour}\"/>"
        ),
        Marker::Square => write!(
            s,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"6\" height=\"6\" fill=\"{colour}\"/>",
            x - 3.0,
            y - 3.0
        ),
        Marker::Triangle => write!(
            s,
            "<path d=\"M{x:.1} {:.1}L{:.1} {:.1}L{:.1} {:.1}Z\" fill=\"{colour}\"/>",
            y - 4.0,
            x + 4.0,
            y + 3.0,
            x - 4.0,
            y + 3.0
        ),
        Marker::Diamond => write!(
            s,
            "<path d=\"M{x:.1} {:.1}L{:.1} {y:.1}L{x:.1} {:.1}L{:.1} {y:.1}Z\" fill=\"{colour}\"/>",
            y - 4.0,
            x + 4.0,
            y + 4.0,
            x - 4.0
        ),
        Marker::Cross => write!(
            s,
            "<path d=\"M{:.1} {:.1}l6 6m0 -6l-6 6\" stroke=\"{colour}\" stroke-width=\"2\"/>",
            x - 3.0,
            y - 3.0
        ),
        Marker::Plus => write!(
            s,
            "<path d=\"M{:.1} {y:.1}h8m-4 -4v8\" stroke=\"{colour}\" stroke-width=\"2\"/>",
            x - 4.0
        ),
        Marker::Bar => write!(
            s,
            "<path d=\"M{x:.1} {:.1}v8\" stroke=\"{colour}\" stroke-width=\"2\"/>",
            y - 4.0
        ),
    };
}

/// The smallest 1, 2 or 5 times a power of ten at or above `v`.
pub(super) fn nice_ceiling(v: u64) -> u64 {
    let mut p = 1u64;
    loop {
        for m in [1, 2, 5] {
            if let Some(c) = p.checked_mul(m)
                && c >= v
            {
                return c;
            }
        }
        match p.checked_mul(10) {
            Some(n) => p = n,
            None => return u64::MAX,
        }
    }
}

pub(super) fn chart_svg(s: &mut String, services: &[&ServiceStats]) {
    // One grid for all lines (the first series'; the others are re-bucketed onto it).
    let grid = &services[0].series;
    let empty = Series {
        bytes: vec![0; grid.bytes.len()],
        flows: vec![0; grid.flows.len()],
        ..grid.clone()
    };
    let mut ranked: Vec<(&ServiceStats, Series)> = services
        .iter()
        .map(|x| {
            let mut g = empty.clone();
            g.add(&x.series);
            (*x, g)
        })
        .collect();
    ranked.sort_by(|a, b| {
        b.1.total_bytes()
            .cmp(&a.1.total_bytes())
            .then_with(|| a.0.service.cmp(&b.0.service))
    });
    let mut lines: Vec<(String, Series)> = Vec::new();
    let mut other = empty.clone();
    let mut others = 0;
    for (i, (x, g)) in ranked.into_iter().enumerate() {
        if i < CHART_SERIES {
            lines.push((x.service.clone(), g));
        } else {
            other.add(&g);
            others += 1;
        }
    }
    if others > 0 {
        lines.push((format!("{others} other services"), other));
    }
    let n = grid.bytes.len();
    let peak = lines
        .iter()
        .flat_map(|(_, g)| g.bytes.iter().copied())
        .max()
        .unwrap_or(0);
    let ymax = nice_ceiling(peak.max(1));
    let (w, h, l, r, t, b) = (960.0, 300.0, 80.0, 20.0, 12.0, 44.0);
    let pw = w - l - r;
    let ph = h - t - b;
    let xat = |i: usize| {
        if n <= 1 {
            l + pw / 2.0
        } else {
            l + pw * i as f64 / (n - 1) as f64
        }
    };
    let yat = |v: u64| t + ph - ph * (v as f64 / ymax as f64);
    let step_s = grid.step_ns / 1_000_000_000;
    let _ = write!(
        s,
        "<figure class=\"chart\">\n<svg viewBox=\"0 0 {w} {h}\" role=\"img\" aria-labelledby=\"chart-title\" xmlns=\"http://www.w3.org/2000/svg\">\n<title id=\"chart-title\">Bytes per {} per service, {} to {}</title>\n",
        duration(grid.step_ns),
        rfc3339(grid.start),
        rfc3339(grid.end()),
    );
    // Axes and grid lines.
    for k in 0..=4u64 {
        let v = ymax / 4 * k;
        let y = yat(v);
        let _ = writeln!(
            s,
            "<line class=\"grid\" x1=\"{l}\" x2=\"{:.1}\" y1=\"{y:.1}\" y2=\"{y:.1}\"/><text class=\"ax\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            l + pw,
            l - 6.0,
            y + 4.0,
            units::bytes(v)
        );
    }
    let ticks = 6.min(n.max(1));
    let long = grid.end() - grid.start > 86_400 * 1_000_000_000;
    for k in 0..ticks {
        let i = if ticks <= 1 {
            0
        } else {
            k * (n - 1) / (ticks - 1)
        };
        let at = rfc3339(grid.start + grid.step_ns * i as u64);
        let label = if long {
            format!("{} {}", &at[5..10], &at[11..16])
        } else if step_s < 60 {
            at[11..19].to_owned()
        } else {
            at[11..16].to_owned()
        };
        let x = xat(i);
        let _ = writeln!(
            s,
            "<line class=\"tick\" x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{:.1}\" y2=\"{:.1}\"/><text class=\"ax\" x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{label}</text>",
            t + ph,
            t + ph + 5.0,
            t + ph + 18.0,
        );
    }
    let _ = writeln!(
        s,
        "<text class=\"ax\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">time (UTC){}</text>",
        l + pw / 2.0,
        h - 6.0,
        if long { ", month-day hour:minute" } else { "" }
    );
    for (idx, (name, g)) in lines.iter().enumerate() {
        let (colour, dash, m) = STYLES[idx.min(STYLES.len() - 1)];
        let _ = write!(
            s,
            "<g class=\"line\"><title>{}</title><polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\"{} points=\"",
            esc(name),
            if dash.is_empty() {
                String::new()
            } else {
                format!(" stroke-dasharray=\"{dash}\"")
            }
        );
        for (i, v) in g.bytes.iter().enumerate() {
            let _ = write!(
                s,
                "{}{:.1},{:.1}",
                if i > 0 { " " } else { "" },
                xat(i),
                yat(*v)
            );
        }
        s.push_str("\"/>");
        // Markers on every point when few, else on every few, so shapes stay legible.
        let every = n.div_ceil(20).max(1);
        for (i, v) in g.bytes.iter().enumerate() {
            if i % every == idx % every {
                marker(s, m, xat(i), yat(*v), colour);
            }
        }
        s.push_str("</g>\n");
    }
    s.push_str("</svg>\n<figcaption><ul class=\"chart-legend\">\n");
    for (idx, (name, g)) in lines.iter().enumerate() {
        let (colour, dash, m) = STYLES[idx.min(STYLES.len() - 1)];
        let _ = write!(
            s,
            "<li><svg class=\"key\" viewBox=\"0 0 40 12\" aria-hidden=\"true\"><line x1=\"0\" x2=\"40\" y1=\"6\" y2=\"6\" stroke=\"{colour}\" stroke-width=\"2\"{}/>",
            if dash.is_empty() {
                String::new()
            } else {
                format!(" stroke-dasharray=\"{dash}\"")
            }
        );
        marker(s, m, 20.0, 6.0, colour);
        let peak_i = g
            .bytes
            .iter()
            .enumerate()
            .max_by_key(|(i, v)| (**v, std::cmp::Reverse(*i)))
            .map(|(i, _)| i)
            .unwrap_or(0);
        let _ = writeln!(
            s,
            "</svg> {}: {} in {} new flows, peak {} at {}</li>",
            esc(name),
            units::bytes(g.total_bytes()),
            g.flows.iter().sum::<u64>(),
            units::bytes(g.bytes.get(peak_i).copied().unwrap_or(0)),
            &rfc3339(g.start + g.step_ns * peak_i as u64)[11..19],
        );
    }
    let _ = writeln!(
        s,
        "</ul>Bytes both ways per {} bucket; a flow's bytes are spread over its lifetime.</figcaption>\n</figure>",
        duration(grid.step_ns)
    );
}
