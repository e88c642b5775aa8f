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

    let mut b = Browser::launch(&chromium, &dir.join("tmp"))?;
    let url = file_url(&page)?;
    let (mut wall, mut dcl, mut load, mut fcp, mut settled, mut filter) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for run in 0..runs {
        let mut tab = b.new_tab(1280, 900)?;
        let t = Instant::now();
        b.navigate(&mut tab, &url)?;
        // Two animation frames after load: the first page of findings is laid out and painted.
        let nav = b.eval(
            &mut tab,
            "new Promise(r => requestAnimationFrame(() => requestAnimationFrame(() => { const n = performance.getEntriesByType('navigation')[0]; const p = performance.getEntriesByName('first-contentful-paint')[0]; r([n.domContentLoadedEventEnd, n.loadEventEnd, p ? p.startTime : -1, performance.now()]); })))",
        )?;
        let w = t.elapsed().as_secs_f64() * 1e3;
        let v: Vec<f64> = serde_json::from_value(nav)?;
        let ready = b.eval(&mut tab, "document.body.getAttribute('data-ready')")?;
        if ready.as_str() != Some(r.findings.len().to_string().as_str()) {
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
            "run {}: navigate->painted {w:.0} ms; DOMContentLoaded {:.0} ms, load {:.0} ms, first contentful paint {:.0} ms, first page drawn {:.0} ms; search over all findings {:.1} ms ({} rows shown)",
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
    }
    let m = median(settled.clone());
    println!(
        "median of {runs}: load event {:.0} ms, first contentful paint {:.0} ms, first page drawn {m:.0} ms (goal 2000 ms: {:.2}x of budget), navigate->painted wall {:.0} ms, DOMContentLoaded {:.0} ms, search {:.1} ms",
        median(load),
        median(fcp),
        m / 2000.0,
        median(wall),
        median(dcl),
        median(filter),
    );
    Ok(())
}
