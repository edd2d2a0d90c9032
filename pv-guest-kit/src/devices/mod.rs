//! Split devices on the guest side (SPEC.md §12–14): the devbus client
//! ([`devbus`]), rings that span several granted pages ([`ring_pages`]), the
//! domain's one grant table shared by every device ([`grant_table`]), and
//! the frontends: [`blkfront`] (a block device with queued asynchronous
//! requests) and [`netfront`] (a vif; a smoltcp `Device` with the `smoltcp`
//! feature). Backends use the same devbus client, ring memory and
//! [`grant_copy`].

pub mod blkfront;
pub mod devbus;
pub mod grant_copy;
pub mod netfront;
pub mod ring_pages;

use spin::Mutex;

use crate::grants::{GrantError, GrantTable};

/// Grant-table frames set up for devices: 4 × 512 references.
const DEVICE_GRANT_FRAMES: u32 = 4;

/// The domain's grant table, set up on first use (a domain has one table;
/// every device of the kit shares it). A guest that uses these devices
/// must grant its own pages through [`grant_table`] too: setting up a
/// second `GrantTable` would replace this one (GNT-1).
static GRANTS: Mutex<Option<GrantTable>> = Mutex::new(None);

/// Runs `f` on the domain's grant table, setting it up first if needed.
pub fn grant_table<T>(f: impl FnOnce(&mut GrantTable) -> T) -> Result<T, GrantError> {
    let mut guard = GRANTS.lock();
    if guard.is_none() {
        *guard = Some(GrantTable::setup(DEVICE_GRANT_FRAMES)?);
    }
    match guard.as_mut() {
        Some(table) => Ok(f(table)),
        None => Err(GrantError::Full),
    }
}
