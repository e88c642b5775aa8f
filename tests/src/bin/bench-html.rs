//! `cargo xtask bench html` runs this: builds a node report with N findings (default 10,000)
//! through the real classifier, renders it as HTML, opens it in headless Chromium several times
//! and prints how long loading and the first render take, plus filtering all findings.
//! Prints figures; asserts nothing about time.
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use portwatch::report::{self, Format};
use portwatch_tests::browser::{Browser, file_url, find_chromium};
use portwatch_tests::report_fixture::node_report;

fn arg(name: &str, default: usize) -> Result<usize> {
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        if a == name {
            return it
                .next()
                .with_context(|| format!("{name} needs a value"))?
                .parse()
                .with_context(|| format!("{name}: expected a number"));
        }
    }
    Ok(default)
}

fn page_arg() -> Option<PathBuf> {
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        if a == "--page" {
            return it.next().map(PathBuf::from);
        }
    }
    None
}

/// Builds a report with `want` findings, renders it, writes the page; returns it and the count.
fn generate(want: usize, dir: &std::path::Path) -> Result<(PathBuf, usize)> {
    // Each extra undocumented port is one finding; the base scenario has a few dozen.
    let base = node_report(0).findings.len();
    if want < base {
        bail!("--findings {want}: the base scenario alone has {base}");
    }
    let t = Instant::now();
    let r = node_report(want - base);
    let build_ms = t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    let mut html = Vec::new();
    report::render(&r, Format::Html, &mut html)?;
    let render_ms = t.elapsed().as_secs_f64() * 1e3;
    let page = dir.join(format!("bench-{}.html", r.findings.len()));
    std::fs::write(&page, &html)?;
    println!(
        "report: {} findings, {} services; classify+build {build_ms:.0} ms, HTML render {render_ms:.0} ms, page {:.1} MB ({})",
        r.findings.len(),
        r.services.len(),
        html.len() as f64 / 1e6,
        page.display()
    );
    Ok((page, r.findings.len()))
}

/// CPU time (user + system, ms) of `root` and all its descendants, from /proc: what the
/// browser spent, whatever else the machine is doing.
fn tree_cpu_ms(root: u32) -> f64 {
    let tick = 100.0; // USER_HZ on Linux
    let mut procs: Vec<(u32, u32, u64)> = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            // Fields after the command (which may hold spaces) in parentheses.
            let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
                continue;
            };
            let f: Vec<&str> = rest.split(' ').collect();
            let (Some(ppid), Some(ut), Some(st)) = (f.get(1), f.get(11), f.get(12)) else {
                continue;
            };
            let cpu = ut.parse::<u64>().unwrap_or(0) + st.parse::<u64>().unwrap_or(0);
            procs.push((pid, ppid.parse().unwrap_or(0), cpu));
        }
    }
    let mut tree = vec![root];
    let mut total = 0;
    let mut i = 0;
    while i < tree.len() {
        let p = tree[i];
        for (pid, ppid, cpu) in &procs {
            if *pid == p {
                total += cpu;
            }
            if *ppid == p && !tree.contains(pid) {
                tree.push(*pid);
            }
        }
        i += 1;
    }
    total as f64 * 1000.0 / tick
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<()> {
    let want = arg("--findings", 10_000)?;
    let runs = arg("--runs", 5)?.max(1);
    let chromium = find_chromium().context(
        "Chromium not found (Debian package `chromium`; `cargo xtask setup` installs it)",
    )?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let dir = target.join("artefacts");
    std::fs::create_dir_all(&dir)?;

    // `--page FILE` measures an existing page instead (to compare variants of one page).
    let (page, findings) = match page_arg() {
        Some(p) => (p, None),
        None => {
            let (p, n) = generate(want, &dir)?;
            (p, Some(n))
        }
    };

    let mut b = Browser::launch(&chromium, &dir.join("tmp"))?;
    let url = file_url(&page)?;
    let (mut wall, mut dcl, mut load, mut fcp, mut settled, mut filter, mut table, mut cpus) = (
        vec![],
        vec![],
        vec![],
        vec![],
        vec![],
        vec![],
        vec![],
        vec![],
    );
    for run in 0..runs {
        let mut tab = b.new_tab(1280, 900)?;
        let cpu0 = tree_cpu_ms(b.pid());
        let t = Instant::now();
        b.navigate(&mut tab, &url)?;
        // Two animation frames after load: the first page of findings is laid out and painted.
        let nav = b.eval(
            &mut tab,
            "new Promise(r => requestAnimationFrame(() => requestAnimationFrame(() => { const n = performance.getEntriesByType('navigation')[0]; const p = performance.getEntriesByName('first-contentful-paint')[0]; r([n.domContentLoadedEventEnd, n.loadEventEnd, p ? p.startTime : -1, performance.now()]); })))",
        )?;
        let w = t.elapsed().as_secs_f64() * 1e3;
        let cpu = tree_cpu_ms(b.pid()) - cpu0;
        let v: Vec<f64> = serde_json::from_value(nav)?;
        let drawn = b
            .eval(
                &mut tab,
                "Number(document.body.getAttribute('data-drawn-ms') || -1)",
            )?
            .as_f64()
            .unwrap_or(-1.0);
        let ready = b.eval(&mut tab, "document.body.getAttribute('data-ready')")?;
        if ready.is_null()
            || findings.is_some_and(|n| ready.as_str() != Some(n.to_string().as_str()))
        {
            bail!("the page did not finish its script: data-ready = {ready}");
        }
        let f = b.eval(
            &mut tab,
            "(() => { const t0 = performance.now(); const i = document.getElementById('f-text'); i.value = '10.30.7.'; i.dispatchEvent(new Event('input')); const n = document.querySelectorAll('#findings-body tr').length; return [performance.now() - t0, n]; })()",
        )?;
        let fv: Vec<f64> = serde_json::from_value(f)?;
        let errs: Vec<String> = tab
            .console
            .iter()
            .filter(|m| m.is_error())
            .map(|m| m.text.clone())
            .collect();
        if !errs.is_empty() {
            bail!("console errors: {errs:?}");
        }
        println!(
            "run {}: navigate->painted {w:.0} ms (browser CPU {cpu:.0} ms); findings table drawn {drawn:.0} ms, DOMContentLoaded {:.0} ms, load {:.0} ms, first contentful paint {:.0} ms, first page drawn {:.0} ms; search over all findings {:.1} ms ({} rows shown)",
            run + 1,
            v[0],
            v[1],
            v[2],
            v[3],
            fv[0],
            fv[1]
        );
        wall.push(w);
        dcl.push(v[0]);
        load.push(v[1]);
        fcp.push(v[2]);
        settled.push(v[3]);
        filter.push(fv[0]);
        table.push(drawn);
        cpus.push(cpu);
    }
    let m = median(settled.clone());
    println!(
        "median of {runs}: browser CPU {:.0} ms, findings table drawn {:.0} ms, load event {:.0} ms, first contentful paint {:.0} ms, first page drawn {m:.0} ms (goal 2000 ms: {:.2}x of budget), navigate->painted wall {:.0} ms, DOMContentLoaded {:.0} ms, search {:.1} ms",
        median(cpus),
        median(table),
        median(load),
        median(fcp),
        m / 2000.0,
        median(wall),
        median(dcl),
        median(filter),
    );
    Ok(())
}
