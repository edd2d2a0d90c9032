//! netfront (SPEC.md §14, NET-*): a network interface (vif) served by a
//! backend domain through a devbus record, a tx ring and an rx ring.
//!
//! The frontend keeps [`RX_BUFFERS`] pages posted on the rx ring (each
//! granted writable to the backend, which copies one frame into it) and
//! sends from [`TX_BUFFERS`] pages granted read-only. [`NetFront::transmit`]
//! queues one frame; [`NetFront::receive`] returns the next received one.
//! With the `smoltcp` feature, `NetFront` is a `smoltcp::phy::Device`, so a
//! guest gets TCP/IP from smoltcp.
//!
//! # Invariants
//! - Rx buffer `i` (request id `i`) is either posted to the backend or
//!   being read by [`NetFront::poll`], which reposts it at once.
//! - A tx buffer is in `tx_free` exactly when no tx request names it.
//! - `rx_posted[i]` holds exactly when rx buffer `i` is on the rx ring.
//!
//! # A hostile backend (NET-5)
//! A producer index that fails RING-6 fails [`NetFront::poll`] with
//! [`NetError::Ring`] and takes nothing. A response naming a buffer that is
//! not out (unknown id, one already answered) is dropped, so no buffer is
//! freed or posted twice; an rx response whose length is outside
//! `NETIF_MIN_FRAME ..= NETIF_MAX_FRAME` or whose frame leaves the page
//! delivers nothing (its buffer is posted again). Each is counted in
//! [`NetStats::garbage`].

use alloc::collections::VecDeque;
use alloc::vec;
use alloc::vec::Vec;

use hypercall_abi::devbus::*;
use hypercall_abi::netif::*;
use hypercall_abi::ring::{FrontRing, RingError};
use hypercall_abi::{DomId, Errno};

use super::devbus;
use super::grant_table;
use super::ring_pages::RingPages;
use crate::events::{self, Port};
use crate::grants::{GrantError, GrantRef};
use crate::mm::{Frame, MmError};
use crate::ring::SharedPage;

/// Rx pages kept posted.
pub const RX_BUFFERS: usize = 64;
/// Tx pages.
pub const TX_BUFFERS: usize = 64;
/// Pages per ring.
const RING_PAGES: u32 = 1;

/// Why a network operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetError {
    Hypercall(Errno),
    Grant(GrantError),
    Mm(MmError),
    Ring(RingError),
    /// Not (or no longer) connected.
    Closed,
    /// No such record for this domain.
    NoDevice,
    /// Every tx buffer is in flight.
    Busy,
    /// The frame is shorter than an Ethernet header or longer than 1514 bytes.
    BadFrame,
}

impl core::fmt::Display for NetError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{self:?}")
    }
}

impl From<Errno> for NetError {
    fn from(e: Errno) -> Self {
        NetError::Hypercall(e)
    }
}

impl From<GrantError> for NetError {
    fn from(e: GrantError) -> Self {
        NetError::Grant(e)
    }
}

impl From<MmError> for NetError {
    fn from(e: MmError) -> Self {
        NetError::Mm(e)
    }
}

/// Counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetStats {
    pub tx_frames: u64,
    pub tx_errors: u64,
    pub rx_frames: u64,
    pub rx_errors: u64,
    /// Responses dropped or refused (NET-5): unknown or repeated ids,
    /// impossible rx lengths or offsets.
    pub garbage: u64,
}

/// A connected vif.
pub struct NetFront {
    record: u32,
    backend: DomId,
    port: Port,
    mac: [u8; 6],
    tx_mem: RingPages,
    tx: FrontRing<NetifTxRequest, NetifTxResponse>,
    rx_mem: RingPages,
    rx: FrontRing<NetifRxRequest, NetifRxResponse>,
    ring_grefs: Vec<GrantRef>,
    rx_bufs: Vec<(Frame, GrantRef)>,
    /// Whether rx buffer `i` is on the rx ring.
    rx_posted: Vec<bool>,
    tx_bufs: Vec<(Frame, GrantRef)>,
    tx_free: Vec<u16>,
    received: VecDeque<Vec<u8>>,
    stats: NetStats,
}

impl core::fmt::Debug for NetFront {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("NetFront")
            .field("record", &self.record)
            .field("mac", &self.mac)
            .field("stats", &self.stats)
            .finish()
    }
}

fn wake(_port: Port) {}

fn grant(backend: DomId, frame: &Frame, readonly: bool) -> Result<GrantRef, NetError> {
    grant_table(|t| t.grant_access(backend, frame.mfn(), readonly))?.map_err(NetError::Grant)
}

/// Takes rx buffer `id` back from the backend (NET-5): `false` if it is not
/// one this frontend has posted (unknown, or already answered).
fn claim_rx(posted: &mut [bool], id: u16) -> bool {
    match posted.get_mut(usize::from(id)) {
        Some(p) if *p => {
            *p = false;
            true
        }
        _ => false,
    }
}

/// Where an rx response's frame lies in its page, `(offset, length)`, if
/// its length is a frame's (NET-1) and it stays inside the page (NET-5).
fn rx_frame(rsp: &NetifRxResponse) -> Option<(usize, usize)> {
    let len = usize::try_from(rsp.status).ok()?;
    let offset = usize::from(rsp.offset);
    let sized = (usize::from(NETIF_MIN_FRAME)..=usize::from(NETIF_MAX_FRAME)).contains(&len);
    (sized && offset + len <= hypercall_abi::PAGE_SIZE as usize).then_some((offset, len))
}

/// The first net record naming this domain as frontend.
pub fn find_vif(me: DomId) -> Result<Option<DevbusRecord>, Errno> {
    Ok(devbus::records()?
        .into_iter()
        .find(|r| r.kind == DEVBUS_KIND_NET && r.frontend == me))
}

fn ring(backend: DomId, grefs: &mut Vec<GrantRef>) -> Result<RingPages, NetError> {
    let mut pages = Vec::new();
    for _ in 0..RING_PAGES {
        let frame = Frame::alloc_zeroed()?;
        grefs.push(grant(backend, &frame, false)?);
        pages.push(SharedPage::from_frame(frame));
    }
    Ok(RingPages::new(pages))
}

impl NetFront {
    /// Connects to record `id` (DEV-3) and posts the rx buffers.
    pub fn connect(id: u32) -> Result<NetFront, NetError> {
        devbus::watch()?;
        let record = devbus::get(id)?.ok_or(NetError::NoDevice)?;
        if record.kind != DEVBUS_KIND_NET || !devbus::settle_frontend(id)? {
            return Err(NetError::NoDevice);
        }
        let backend = record.backend;
        let mut ring_grefs = Vec::new();
        let mut tx_mem = ring(backend, &mut ring_grefs)?;
        let mut rx_mem = ring(backend, &mut ring_grefs)?;
        let tx = FrontRing::init(&mut tx_mem).map_err(NetError::Ring)?;
        let mut rx = FrontRing::init(&mut rx_mem).map_err(NetError::Ring)?;
        let mut rx_bufs = Vec::with_capacity(RX_BUFFERS);
        for i in 0..RX_BUFFERS {
            let frame = Frame::alloc()?;
            let gref = grant(backend, &frame, false)?;
            rx.push_request(
                &mut rx_mem,
                &NetifRxRequest {
                    id: i as u16,
                    pad: 0,
                    gref,
                },
            )
            .map_err(|_| NetError::Busy)?;
            rx_bufs.push((frame, gref));
        }
        // The backend attaches later and reads these from the ring (RING-7):
        // nobody to notify yet.
        let _ = rx.publish_requests(&mut rx_mem);
        let mut tx_bufs = Vec::with_capacity(TX_BUFFERS);
        for _ in 0..TX_BUFFERS {
            let frame = Frame::alloc()?;
            let gref = grant(backend, &frame, true)?;
            tx_bufs.push((frame, gref));
        }
        let port = events::alloc_unbound(backend)?;
        events::set_handler(port, wake);
        let mut refs = [0u32; DEVBUS_MAX_RING_PAGES as usize];
        refs[..ring_grefs.len()].copy_from_slice(&ring_grefs);
        devbus::publish(&DevbusPublish {
            id,
            nr_ring_pages: RING_PAGES,
            event_port: port,
            pad: 0,
            ring_refs: refs,
        })?;
        let connected = devbus::wait_for(id, |r| {
            r.state == DEVBUS_STATE_CONNECTED || r.closed_sides != 0
        })?;
        let mut mac = [0u8; 6];
        mac.copy_from_slice(&record.mac[..6]);
        let front = NetFront {
            record: id,
            backend,
            port,
            mac,
            tx_mem,
            tx,
            rx_mem,
            rx,
            ring_grefs,
            rx_bufs,
            rx_posted: vec![true; RX_BUFFERS],
            tx_bufs,
            tx_free: (0..TX_BUFFERS as u16).rev().collect(),
            received: VecDeque::new(),
            stats: NetStats::default(),
        };
        match connected {
            Some(r) if r.state == DEVBUS_STATE_CONNECTED => Ok(front),
            // The backend refused: its grants stay (the frames are leaked
            // with `front`'s ring pages, never reused while granted).
            _ => {
                core::mem::forget(front);
                Err(NetError::Closed)
            }
        }
    }

    /// The vif's MAC address (from the record).
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// The event-channel port (notified by the backend on rx and tx completions).
    pub fn port(&self) -> Port {
        self.port
    }

    /// Counters.
    pub fn stats(&self) -> NetStats {
        self.stats
    }

    /// Takes tx completions and received frames (reposting their buffers).
    pub fn poll(&mut self) -> Result<(), NetError> {
        while let Some(rsp) = self
            .tx
            .take_response(&self.tx_mem)
            .map_err(NetError::Ring)?
        {
            if usize::from(rsp.id) < TX_BUFFERS && !self.tx_free.contains(&rsp.id) {
                self.tx_free.push(rsp.id);
            } else {
                self.stats.garbage += 1;
                continue;
            }
            if rsp.status != NETIF_RSP_OKAY {
                self.stats.tx_errors += 1;
            }
        }
        // Buffers are reposted only after every published response was
        // taken, so a repeated id in one batch finds its buffer not posted.
        let mut taken = Vec::new();
        let outcome = loop {
            let rsp = match self.rx.take_response(&self.rx_mem) {
                Ok(Some(rsp)) => rsp,
                Ok(None) => break Ok(()),
                Err(e) => break Err(NetError::Ring(e)),
            };
            if !claim_rx(&mut self.rx_posted, rsp.id) {
                // Not a buffer the backend holds: nothing to read or repost.
                self.stats.garbage += 1;
                continue;
            }
            taken.push(rsp.id);
            let (frame, _) = &self.rx_bufs[usize::from(rsp.id)];
            if let Some((offset, len)) = rx_frame(&rsp) {
                let mut data = vec![0u8; len];
                frame.read_bytes(offset, &mut data);
                self.received.push_back(data);
                self.stats.rx_frames += 1;
            } else {
                if rsp.status != NETIF_RSP_ERROR {
                    self.stats.garbage += 1;
                }
                self.stats.rx_errors += 1;
            }
        };
        for &id in &taken {
            let req = NetifRxRequest {
                id,
                pad: 0,
                gref: self.rx_bufs[usize::from(id)].1,
            };
            // At most as many requests as responses just taken: room exists.
            self.rx
                .push_request(&mut self.rx_mem, &req)
                .map_err(|_| NetError::Busy)?;
            self.rx_posted[usize::from(id)] = true;
        }
        if !taken.is_empty() && self.rx.publish_requests(&mut self.rx_mem) {
            events::notify(self.port)?;
        }
        outcome
    }

    /// Rx buffers on the rx ring (all of them, unless a backend broke the ring).
    pub fn rx_posted(&self) -> usize {
        self.rx_posted.iter().filter(|&&p| p).count()
    }

    /// Whether a response is waiting; re-arms the notifications first.
    pub fn has_work(&mut self) -> bool {
        let tx = self.tx.final_check_for_responses(&mut self.tx_mem);
        let rx = self.rx.final_check_for_responses(&mut self.rx_mem);
        tx || rx || !self.received.is_empty()
    }

    /// Whether every transmitted frame was answered (after [`Self::poll`]).
    pub fn tx_idle(&self) -> bool {
        self.tx_free.len() == TX_BUFFERS
    }

    /// Whether a tx buffer is free (after [`Self::poll`]).
    pub fn can_transmit(&self) -> bool {
        !self.tx_free.is_empty()
    }

    /// Queues one Ethernet frame (NET-1) and notifies the backend.
    pub fn transmit(&mut self, frame: &[u8]) -> Result<(), NetError> {
        let size = u16::try_from(frame.len()).map_err(|_| NetError::BadFrame)?;
        if !(NETIF_MIN_FRAME..=NETIF_MAX_FRAME).contains(&size) {
            return Err(NetError::BadFrame);
        }
        self.poll()?;
        let id = self.tx_free.pop().ok_or(NetError::Busy)?;
        let (page, gref) = &mut self.tx_bufs[usize::from(id)];
        page.write_bytes(0, frame);
        let req = NetifTxRequest {
            gref: *gref,
            offset: 0,
            flags: 0,
            id,
            size,
            pad: 0,
        };
        if self.tx.push_request(&mut self.tx_mem, &req).is_err() {
            self.tx_free.push(id);
            return Err(NetError::Busy);
        }
        self.stats.tx_frames += 1;
        if self.tx.publish_requests(&mut self.tx_mem) {
            events::notify(self.port)?;
        }
        Ok(())
    }

    /// The next received frame, if any.
    pub fn receive(&mut self) -> Result<Option<Vec<u8>>, NetError> {
        if self.received.is_empty() {
            self.poll()?;
        }
        Ok(self.received.pop_front())
    }

    /// The devbus record.
    pub fn record(&self) -> u32 {
        self.record
    }

    /// The backend domain.
    pub fn backend(&self) -> DomId {
        self.backend
    }

    /// Grants of the rings (for tests).
    pub fn ring_grefs(&self) -> &[GrantRef] {
        &self.ring_grefs
    }

    /// Closes this side of the record, waits until the backend closed its
    /// side too (so it no longer maps the rings or copies into the pages),
    /// ends every grant and frees the pages. Pages whose grant cannot be
    /// ended are kept out of use.
    pub fn disconnect(mut self) -> Result<(), NetError> {
        devbus::close(self.record)?;
        devbus::wait_for(self.record, |r| r.state == DEVBUS_STATE_CLOSED)?;
        let _ = events::close(self.port);
        let mut stuck = 0usize;
        let buffers = core::mem::take(&mut self.rx_bufs)
            .into_iter()
            .chain(core::mem::take(&mut self.tx_bufs));
        for (frame, gref) in buffers {
            if grant_table(|t| t.end_access(gref).is_ok()).unwrap_or(false) {
                drop(frame);
            } else {
                stuck += 1;
                core::mem::forget(frame);
            }
        }
        let rings_free = self
            .ring_grefs
            .iter()
            .all(|&g| grant_table(|t| t.end_access(g).is_ok()).unwrap_or(false));
        if !rings_free {
            for page in self
                .tx_mem
                .take_pages()
                .into_iter()
                .chain(self.rx_mem.take_pages())
            {
                core::mem::forget(page);
            }
            stuck += 1;
        }
        if stuck == 0 {
            Ok(())
        } else {
            Err(NetError::Busy)
        }
    }
}

#[cfg(feature = "smoltcp")]
mod smoltcp_device {
    //! `smoltcp::phy::Device` for [`NetFront`], and the clock smoltcp runs on.

    use alloc::vec;
    use alloc::vec::Vec;

    use smoltcp::phy::{Device, DeviceCapabilities, Medium};
    use smoltcp::time::Instant;

    use super::{NetFront, TX_BUFFERS};

    /// System time (TIME-1) as a smoltcp instant: what a guest passes to
    /// `Interface::poll` and friends.
    pub fn smoltcp_now() -> Instant {
        Instant::from_micros((crate::time::now_ns() / 1000) as i64)
    }

    /// A received frame.
    pub struct NetRxToken(Vec<u8>);

    /// Room to send one frame.
    pub struct NetTxToken<'a>(&'a mut NetFront);

    impl smoltcp::phy::RxToken for NetRxToken {
        fn consume<R, F>(self, f: F) -> R
        where
            F: FnOnce(&[u8]) -> R,
        {
            f(&self.0)
        }
    }

    impl smoltcp::phy::TxToken for NetTxToken<'_> {
        fn consume<R, F>(self, len: usize, f: F) -> R
        where
            F: FnOnce(&mut [u8]) -> R,
        {
            let mut buf = vec![0u8; len];
            let r = f(&mut buf);
            // A frame that cannot be queued is lost, as on a wire; TCP
            // retransmits.
            let _ = self.0.transmit(&buf);
            r
        }
    }

    impl Device for NetFront {
        type RxToken<'a> = NetRxToken;
        type TxToken<'a> = NetTxToken<'a>;

        fn receive(&mut self, _now: Instant) -> Option<(NetRxToken, NetTxToken<'_>)> {
            let frame = self.receive().ok().flatten()?;
            Some((NetRxToken(frame), NetTxToken(self)))
        }

        fn transmit(&mut self, _now: Instant) -> Option<NetTxToken<'_>> {
            let _ = self.poll();
            self.can_transmit().then_some(NetTxToken(self))
        }

        fn capabilities(&self) -> DeviceCapabilities {
            let mut caps = DeviceCapabilities::default();
            caps.medium = Medium::Ethernet;
            caps.max_transmission_unit = usize::from(hypercall_abi::netif::NETIF_MAX_FRAME);
            caps.max_burst_size = Some(TX_BUFFERS);
            caps
        }
    }
}

#[cfg(feature = "smoltcp")]
pub use smoltcp_device::{smoltcp_now, NetRxToken, NetTxToken};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_is_claimed_once_per_posting() {
        let mut posted = vec![true; 4];
        // A batch naming buffer 2 twice, an unknown id and a good one.
        assert!(claim_rx(&mut posted, 2));
        assert!(!claim_rx(&mut posted, 2));
        assert!(!claim_rx(&mut posted, 4));
        assert!(!claim_rx(&mut posted, u16::MAX));
        assert!(claim_rx(&mut posted, 0));
        assert_eq!(posted, [false, true, false, true]);
    }

    #[test]
    fn rx_frames_stay_in_their_page_and_size() {
        let rsp = |offset, status| NetifRxResponse {
            id: 0,
            offset,
            flags: 0,
            status,
        };
        assert_eq!(rx_frame(&rsp(0, 60)), Some((0, 60)));
        assert_eq!(rx_frame(&rsp(4096 - 1514, 1514)), Some((2582, 1514)));
        for (offset, status) in [
            (0, 0),
            (0, 13),
            (0, 1515),
            (0, 3000),
            (4000, 200),
            (0, -1),
            (u16::MAX, 60),
        ] {
            assert_eq!(rx_frame(&rsp(offset, status)), None, "{offset} {status}");
        }
    }
}
