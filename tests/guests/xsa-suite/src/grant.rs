//! tmp
use pv_guest_kit::cmdline::Args;
use pv_guest_kit::testing::TestReport;
pub fn xsa_224(r: &mut TestReport, _: &Args<'_>) {
    r.error(format_args!("todo"))
}
pub fn xsa_226(r: &mut TestReport, _: &Args<'_>) {
    r.error(format_args!("todo"))
}
pub fn xsa_227(r: &mut TestReport, _: &Args<'_>) {
    r.error(format_args!("todo"))
}
pub fn xsa_230(r: &mut TestReport, _: &Args<'_>) {
    r.error(format_args!("todo"))
}
pub fn xsa_234(r: &mut TestReport, _: &Args<'_>) {
    r.error(format_args!("todo"))
}
pub fn xsa_316(r: &mut TestReport, _: &Args<'_>) {
    r.error(format_args!("todo"))
}
pub fn xsa_380(r: &mut TestReport, _: &Args<'_>) {
    r.error(format_args!("todo"))
}
