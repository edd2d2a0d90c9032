//! tmp
use pv_guest_kit::cmdline::Args;
use pv_guest_kit::testing::TestReport;
pub fn xsa_155(r: &mut TestReport, _: &Args<'_>) {
    r.error(format_args!("todo"))
}
pub fn xsa_216(r: &mut TestReport, _: &Args<'_>) {
    r.error(format_args!("todo"))
}
pub fn xsa_332(r: &mut TestReport, _: &Args<'_>) {
    r.error(format_args!("todo"))
}
pub fn xsa_391(r: &mut TestReport, _: &Args<'_>) {
    r.error(format_args!("todo"))
}
