//! xtask: setup, build, run, test and bench orchestration for portwatch.
fn main() {}
