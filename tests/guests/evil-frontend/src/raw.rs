//! Raw frontend connections: this guest's own rings on a devbus record,
//! without blkfront/netfront, so an attack can write any byte of a slot or
//! of the header at any time (SPEC.md DEV-3, RING-1).
//!
//! [`RawRing`] keeps the protocol's private state ([`FrontRing`]) beside
//! the pages, so honest traffic and hostile writes can be mixed; the slot
//! a request went into is [`RawRing::push`]'s return value.

use alloc::vec::Vec;

use hypercall_abi::blkif::{BlkifRequest, BlkifResponse};
use hypercall_abi::devbus::*;
use hypercall_abi::netif::*;
use hypercall_abi::ring::{FrontRing, RingMemory, RingMessage, SRING_HEADER_SIZE};
use hypercall_abi::DomId;
use pv_guest_kit::devices::ring_pages::RingPages;
use pv_guest_kit::devices::{devbus, grant_table};
use pv_guest_kit::events::{self, Port};
use pv_guest_kit::mm::Frame;
use pv_guest_kit::ring::SharedPage;

/// Byte offset of `rsp_prod` in the ring header (RING-1).
pub const RSP_PROD: usize = 8;
/// Byte offset of `req_prod`.
pub const REQ_PROD: usize = 0;

fn wake(_port: Port) {}

/// Grants `frame` to `backend`; panics on failure (a test guest).
pub fn grant(backend: DomId, frame: &Frame, readonly: bool) -> u32 {
    grant_table(|t| t.grant_access(backend, frame.mfn(), readonly))
        .and_then(|r| r)
        .unwrap_or_else(|e| panic!("evil-frontend: grant: {e}"))
}

/// Ends a grant; whether it could be ended (the backend no longer uses it).
pub fn end_grant(gref: u32) -> bool {
    grant_table(|t| t.end_access(gref).is_ok()).unwrap_or(false)
}

/// One ring this guest owns: one page, granted to the backend.
pub struct RawRing<Req, Rsp> {
    pub mem: RingPages,
    pub front: FrontRing<Req, Rsp>,
    pub gref: u32,
    /// Requests pushed so far (the ring starts at index 0).
    pushed: u32,
    /// Responses taken so far.
    taken: u32,
}

impl<Req: RingMessage, Rsp: RingMessage> RawRing<Req, Rsp> {
    fn new(backend: DomId) -> Self {
        let frame = Frame::alloc_zeroed().unwrap_or_else(|e| panic!("evil-frontend: {e:?}"));
        let gref = grant(backend, &frame, false);
        let mut mem = RingPages::new(alloc::vec![SharedPage::from_frame(frame)]);
        let front = FrontRing::init(&mut mem).unwrap_or_else(|e| panic!("evil-frontend: {e}"));
        RawRing {
            mem,
            front,
            gref,
            pushed: 0,
            taken: 0,
        }
    }

    /// Byte offset of the slot of free-running index `idx`.
    pub fn slot(&self, idx: u32) -> usize {
        SRING_HEADER_SIZE
            + (idx & (self.front.size() - 1)) as usize * FrontRing::<Req, Rsp>::SLOT_SIZE
    }

    /// Pushes `req` (not yet published); returns its slot's byte offset.
    pub fn push(&mut self, req: &Req) -> usize {
        let at = self.slot(self.pushed);
        self.front
            .push_request(&mut self.mem, req)
            .unwrap_or_else(|_| panic!("evil-frontend: ring full"));
        self.pushed = self.pushed.wrapping_add(1);
        at
    }

    /// Publishes what was pushed (the caller notifies).
    pub fn publish(&mut self) {
        let _ = self.front.publish_requests(&mut self.mem);
    }

    /// The shared `rsp_prod`, as the backend last wrote it.
    pub fn rsp_prod(&self) -> u32 {
        self.mem.read_u32(RSP_PROD)
    }

    /// How many responses were taken.
    pub fn front_rsp_cons(&self) -> u32 {
        self.taken
    }

    /// The next response, if published, without taking it.
    pub fn peek(&self) -> Option<Rsp> {
        if self.rsp_prod() == self.taken {
            return None;
        }
        let mut rsp = Rsp::new_zeroed();
        self.mem
            .read_bytes(self.slot(self.taken), rsp.as_mut_bytes());
        Some(rsp)
    }

    /// Takes the next response (panics on a broken ring: the backend is honest here).
    pub fn take(&mut self) -> Option<Rsp> {
        let rsp = self
            .front
            .take_response(&self.mem)
            .unwrap_or_else(|e| panic!("evil-frontend: response ring: {e}"));
        if rsp.is_some() {
            self.taken = self.taken.wrapping_add(1);
        }
        rsp
    }

    /// The `len` bytes at ring offset `at`.
    pub fn bytes(&self, at: usize, len: usize) -> Vec<u8> {
        let mut out = alloc::vec![0u8; len];
        self.mem.read_bytes(at, &mut out);
        out
    }
}

/// Waits for and takes the next response of `ring`.
pub fn wait_response<Req: RingMessage, Rsp: RingMessage>(ring: &mut RawRing<Req, Rsp>) -> Rsp {
    loop {
        if let Some(rsp) = ring.take() {
            return rsp;
        }
        events::wait_until(|| ring.front.final_check_for_responses(&mut ring.mem));
    }
}

/// Settles record `id`, publishes `rings` and `port`, waits for `CONNECTED`.
fn publish(id: u32, refs: &[u32], nr_ring_pages: u32, port: Port) {
    let mut ring_refs = [0u32; DEVBUS_MAX_RING_PAGES as usize];
    ring_refs[..refs.len()].copy_from_slice(refs);
    devbus::publish(&DevbusPublish {
        id,
        nr_ring_pages,
        event_port: port,
        pad: 0,
        ring_refs,
    })
    .unwrap_or_else(|e| panic!("evil-frontend: publish: {e}"));
    let r = devbus::wait_for(id, |r| {
        r.state == DEVBUS_STATE_CONNECTED || r.closed_sides != 0
    })
    .unwrap_or_else(|e| panic!("evil-frontend: devbus: {e}"));
    assert!(
        matches!(r, Some(r) if r.state == DEVBUS_STATE_CONNECTED),
        "evil-frontend: record {id} did not connect: {r:?}"
    );
}

fn settle(id: u32) -> DevbusRecord {
    devbus::watch().unwrap_or_else(|e| panic!("evil-frontend: VIRQ_DEVBUS: {e}"));
    let record = devbus::get(id)
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("evil-frontend: no record {id}"));
    assert!(
        devbus::settle_frontend(id).unwrap_or(false),
        "evil-frontend: record {id} cannot be used"
    );
    record
}

/// A blkif connection on one raw ring page.
pub struct RawBlk {
    pub record: u32,
    pub backend: DomId,
    pub port: Port,
    pub sectors: u64,
    pub ring: RawRing<BlkifRequest, BlkifResponse>,
}

impl RawBlk {
    pub fn connect(id: u32) -> RawBlk {
        let record = settle(id);
        let ring = RawRing::new(record.backend);
        let port = events::alloc_unbound(record.backend)
            .unwrap_or_else(|e| panic!("evil-frontend: port: {e}"));
        events::set_handler(port, wake);
        publish(id, &[ring.gref], 1, port);
        RawBlk {
            record: id,
            backend: record.backend,
            port,
            sectors: record.sectors,
            ring,
        }
    }

    /// Sends `req` honestly and waits for its response.
    pub fn call(&mut self, req: &BlkifRequest) -> BlkifResponse {
        self.ring.push(req);
        self.ring.publish();
        let _ = events::notify(self.port);
        wait_response(&mut self.ring)
    }

    /// Closes the record and waits until the backend let go.
    pub fn close(self) {
        close(self.record, self.port, &[self.ring.gref]);
    }
}

/// Closes record `id`, waits for `CLOSED`, ends the ring grants.
fn close(id: u32, port: Port, grefs: &[u32]) {
    let _ = devbus::close(id);
    let _ = devbus::wait_for(id, |r| r.state == DEVBUS_STATE_CLOSED);
    let _ = events::close(port);
    for &g in grefs {
        assert!(end_grant(g), "evil-frontend: ring grant {g} still in use");
    }
}

/// Rx buffers a raw vif posts.
pub const RX_PAGES: usize = 16;

/// A netif connection on raw tx and rx rings, with [`RX_PAGES`] rx pages
/// posted (request id = page index).
pub struct RawNet {
    pub record: u32,
    pub backend: DomId,
    pub port: Port,
    pub mac: [u8; 6],
    pub tx: RawRing<NetifTxRequest, NetifTxResponse>,
    pub rx: RawRing<NetifRxRequest, NetifRxResponse>,
    pub rx_pages: Vec<(Frame, u32)>,
}

impl RawNet {
    pub fn connect(id: u32, fill: u8) -> RawNet {
        let record = settle(id);
        let backend = record.backend;
        let tx = RawRing::new(backend);
        let mut rx: RawRing<NetifRxRequest, NetifRxResponse> = RawRing::new(backend);
        let mut rx_pages = Vec::new();
        for i in 0..RX_PAGES {
            let mut frame = Frame::alloc().unwrap_or_else(|e| panic!("evil-frontend: {e:?}"));
            frame.write_bytes(0, &[fill; 4096]);
            let gref = grant(backend, &frame, false);
            rx.push(&NetifRxRequest {
                id: i as u16,
                pad: 0,
                gref,
            });
            rx_pages.push((frame, gref));
        }
        rx.publish();
        let port =
            events::alloc_unbound(backend).unwrap_or_else(|e| panic!("evil-frontend: port: {e}"));
        events::set_handler(port, wake);
        publish(id, &[tx.gref, rx.gref], 1, port);
        let mut mac = [0u8; 6];
        mac.copy_from_slice(&record.mac[..6]);
        RawNet {
            record: id,
            backend,
            port,
            mac,
            tx,
            rx,
            rx_pages,
        }
    }

    /// Posts rx page `i` again.
    pub fn repost(&mut self, i: u16) {
        let gref = self.rx_pages[usize::from(i)].1;
        self.rx.push(&NetifRxRequest {
            id: i,
            pad: 0,
            gref,
        });
        self.rx.publish();
        let _ = events::notify(self.port);
    }

    /// Closes the record and waits until the backend let go.
    pub fn close(self) {
        close(self.record, self.port, &[self.tx.gref, self.rx.gref]);
        for (frame, gref) in self.rx_pages {
            assert!(
                end_grant(gref),
                "evil-frontend: rx grant {gref} still in use"
            );
            drop(frame);
        }
    }
}

/// The records naming this domain as frontend, of `kind`, in id order,
/// once there are at least `min` (the toolstack creates them one by one).
pub fn my_records(me: DomId, kind: u32, min: usize) -> Vec<DevbusRecord> {
    devbus::watch().unwrap_or_else(|e| panic!("evil-frontend: VIRQ_DEVBUS: {e}"));
    let mut found = Vec::new();
    events::wait_until(|| {
        found = devbus::records()
            .unwrap_or_else(|e| panic!("evil-frontend: devbus: {e}"))
            .into_iter()
            .filter(|r| r.kind == kind && r.frontend == me)
            .collect();
        found.len() >= min.max(1)
    });
    found
}
