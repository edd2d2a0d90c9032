//! netback (SPEC.md §14, NET-*): one vif's tx and rx rings.
//!
//! Tx requests are copied out once (RING-5) and checked
//! (`netif::check_tx`, NET-2); the frame is grant-copied into a bounce
//! frame and handed to the caller (the bridge), which answers it with
//! [`NetConnection::answer_tx`]. Rx requests (pages the frontend lends)
//! are taken off the ring into a queue; [`NetConnection::deliver`] copies a
//! frame into the oldest one with a grant copy (NET-3) and responds. A
//! vif without a posted page drops the frame.

use alloc::collections::VecDeque;
use alloc::vec;
use alloc::vec::Vec;

use hypercall_abi::netif::*;
use hypercall_abi::ring::{BackRing, RingError};
use hypercall_abi::DomId;
use pv_guest_kit::devices::grant_copy::{copy_batch, CopyOp, Direction};
use pv_guest_kit::devices::ring_pages::RingPages;
use pv_guest_kit::events::{self, Port};
use pv_guest_kit::mm::Frame;

/// Tx frames taken from one vif per round.
const TX_BUDGET: usize = 32;

/// Counters of one vif.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetStats {
    pub tx_frames: u64,
    pub tx_refused: u64,
    pub rx_frames: u64,
    pub rx_dropped: u64,
}

/// A frame a vif sent: its tx id and the bytes (or why it was refused).
pub struct TxFrame {
    pub id: u16,
    pub frame: Result<Vec<u8>, i16>,
}

/// One connected vif.
pub struct NetConnection {
    pub frontend: DomId,
    pub mac: [u8; 6],
    port: Port,
    tx_mem: RingPages,
    tx: BackRing<NetifTxRequest, NetifTxResponse>,
    rx_mem: RingPages,
    rx: BackRing<NetifRxRequest, NetifRxResponse>,
    posted: VecDeque<NetifRxRequest>,
    pub stats: NetStats,
    /// Responses pushed since the last publish.
    dirty: bool,
}

impl NetConnection {
    /// Attaches to both rings (RING-7).
    pub fn new(
        frontend: DomId,
        mac: [u8; 6],
        port: Port,
        tx_mem: RingPages,
        rx_mem: RingPages,
    ) -> Result<NetConnection, (RingPages, RingPages, RingError)> {
        let tx = match BackRing::attach(&tx_mem) {
            Ok(r) => r,
            Err(e) => return Err((tx_mem, rx_mem, e)),
        };
        let rx = match BackRing::attach(&rx_mem) {
            Ok(r) => r,
            Err(e) => return Err((tx_mem, rx_mem, e)),
        };
        Ok(NetConnection {
            frontend,
            mac,
            port,
            tx_mem,
            tx,
            rx_mem,
            rx,
            posted: VecDeque::new(),
            stats: NetStats::default(),
            dirty: false,
        })
    }

    pub fn port(&self) -> Port {
        self.port
    }

    /// The ring pages back (to unmap them).
    pub fn into_rings(self) -> (RingPages, RingPages) {
        (self.tx_mem, self.rx_mem)
    }

    /// Whether the frontend published tx or rx requests; re-arms both.
    pub fn has_work(&mut self) -> Result<bool, RingError> {
        let tx = self.tx.final_check_for_requests(&mut self.tx_mem)?;
        let rx = self.rx.final_check_for_requests(&mut self.rx_mem)?;
        Ok(tx || rx)
    }

    /// Takes up to a budget of tx frames, copied into this domain.
    ///
    /// Posted rx pages are taken first, so a broken rx producer index ends
    /// the vif now, not only when a frame next arrives for it (until then
    /// `has_work` would report work on every round and the event loop
    /// would spin).
    pub fn take_tx(&mut self, bounce: &mut [Frame]) -> Result<Vec<TxFrame>, RingError> {
        self.refill()?;
        let mut reqs = Vec::new();
        while reqs.len() < TX_BUDGET.min(bounce.len()) {
            match self.tx.take_request(&self.tx_mem)? {
                Some(req) => reqs.push(req),
                None => break,
            }
        }
        let mut ops = Vec::new();
        let mut slots = Vec::new();
        for req in &reqs {
            if check_tx(req).is_ok() {
                slots.push(Some(ops.len()));
                ops.push(CopyOp {
                    dom: self.frontend,
                    gref: req.gref,
                    grant_offset: u32::from(req.offset),
                    frame: ops.len(),
                    frame_offset: 0,
                    len: u32::from(req.size),
                    direction: Direction::FromGrant,
                });
            } else {
                slots.push(None);
            }
        }
        let statuses = copy_batch(&ops, bounce).unwrap_or_else(|_| vec![-1; ops.len()]);
        let mut out = Vec::with_capacity(reqs.len());
        for (req, slot) in reqs.iter().zip(slots) {
            let frame = match slot {
                Some(i) if statuses.get(i) == Some(&0) => {
                    let mut data = vec![0u8; usize::from(req.size)];
                    bounce[i].read_bytes(0, &mut data);
                    Ok(data)
                }
                _ => Err(NETIF_RSP_ERROR),
            };
            out.push(TxFrame { id: req.id, frame });
        }
        Ok(out)
    }

    /// Answers tx request `id`.
    pub fn answer_tx(&mut self, id: u16, status: i16) -> Result<(), RingError> {
        if status == NETIF_RSP_OKAY {
            self.stats.tx_frames += 1;
        } else {
            self.stats.tx_refused += 1;
        }
        self.tx
            .push_response(&mut self.tx_mem, &NetifTxResponse { id, status, pad: 0 })?;
        self.dirty = true;
        Ok(())
    }

    /// Moves newly posted rx pages into the queue (answering malformed ones).
    fn refill(&mut self) -> Result<(), RingError> {
        while let Some(req) = self.rx.take_request(&self.rx_mem)? {
            if check_rx(&req) {
                self.posted.push_back(req);
            } else {
                self.rx.push_response(
                    &mut self.rx_mem,
                    &NetifRxResponse {
                        id: req.id,
                        offset: 0,
                        flags: 0,
                        status: NETIF_RSP_ERROR,
                    },
                )?;
                self.dirty = true;
            }
        }
        Ok(())
    }

    /// Copies `frame` into the next posted page; `Ok(false)` if none is posted
    /// (the frame is dropped).
    pub fn deliver(&mut self, frame: &[u8], bounce: &mut [Frame]) -> Result<bool, RingError> {
        self.refill()?;
        let Some(req) = self.posted.pop_front() else {
            self.stats.rx_dropped += 1;
            return Ok(false);
        };
        let Some(first) = bounce.first_mut() else {
            return Ok(false);
        };
        first.write_bytes(0, frame);
        let op = CopyOp {
            dom: self.frontend,
            gref: req.gref,
            grant_offset: 0,
            frame: 0,
            frame_offset: 0,
            len: frame.len() as u32,
            direction: Direction::ToGrant,
        };
        let ok = matches!(copy_batch(&[op], bounce).as_deref(), Ok([0]));
        let status = if ok {
            self.stats.rx_frames += 1;
            frame.len() as i16
        } else {
            NETIF_RSP_ERROR
        };
        self.rx.push_response(
            &mut self.rx_mem,
            &NetifRxResponse {
                id: req.id,
                offset: 0,
                flags: 0,
                status,
            },
        )?;
        self.dirty = true;
        Ok(ok)
    }

    /// Publishes pushed responses on both rings, notifying once if asked.
    pub fn publish(&mut self) {
        if !self.dirty {
            return;
        }
        self.dirty = false;
        let tx = self.tx.publish_responses(&mut self.tx_mem);
        let rx = self.rx.publish_responses(&mut self.rx_mem);
        if tx || rx {
            let _ = events::notify(self.port);
        }
    }
}
