//! tmp
use pv_guest_kit::cmdline::Args;
use pv_guest_kit::testing::TestReport;
pub fn xsa_188(r: &mut TestReport, _: &Args<'_>) {
    r.error(format_args!("todo"))
}
pub fn xsa_317(r: &mut TestReport, _: &Args<'_>) {
    r.error(format_args!("todo"))
}
pub fn xsa_342(r: &mut TestReport, _: &Args<'_>) {
    r.error(format_args!("todo"))
}
pub fn xsa_343(r: &mut TestReport, _: &Args<'_>) {
    r.error(format_args!("todo"))
}
pub fn xsa_344(r: &mut TestReport, _: &Args<'_>) {
    r.error(format_args!("todo"))
}
