//! The virtio-net driver (virtio 1.2 §5.1): receive queue 0, transmit queue
//! 1, one DMA page per buffer. Every buffer starts with the 12-byte
//! `virtio_net_hdr` (all zero: no offloads are negotiated).
//!
//! Receive pages stay posted; a received frame is copied out and its page
//! posted again. The used length is device data: a length shorter than the
//! header or longer than the page drops the frame.

use alloc::vec::Vec;

use super::pci::VirtioPci;
use super::queue::{Buffer, SplitQueue};
use super::{VirtioError, F_ACCESS_PLATFORM, F_VERSION_1};
use crate::dma::{DmaAllocator, DmaPage, Segment, PAGE_SIZE};
use crate::net::{Mac, NetError, Nic, MAX_FRAME};
use crate::regs::RegisterWindow;

/// Feature: the configuration holds the MAC address.
pub const F_MAC: u64 = 1 << 5;
/// Bytes of `virtio_net_hdr` (with `num_buffers`, as in virtio 1.x).
pub const HEADER_LEN: usize = 12;
/// Receive queue index.
pub const RX: u16 = 0;
/// Transmit queue index.
pub const TX: u16 = 1;
/// Buffers per queue.
pub const BUFFERS: u16 = 64;

/// A virtio-net device.
pub struct VirtioNet<W: RegisterWindow, P: DmaPage> {
    dev: VirtioPci<W>,
    rx: SplitQueue<P>,
    tx: SplitQueue<P>,
    rx_pages: Vec<P>,
    /// Receive page index per chain head.
    rx_by_head: Vec<Option<u16>>,
    tx_pages: Vec<P>,
    tx_free: Vec<u16>,
    tx_by_head: Vec<Option<u16>>,
    mac: Mac,
    /// Frames dropped for a bad used length.
    pub dropped: u64,
}

impl<W: RegisterWindow, P: DmaPage> VirtioNet<W, P> {
    /// Initialises the device, posts the receive buffers, DRIVER_OK.
    /// `vectors` are the MSI-X vectors of the receive and transmit queues.
    pub fn new<A: DmaAllocator<Page = P>>(
        dev: VirtioPci<W>,
        alloc: &mut A,
        vectors: (u16, u16),
    ) -> Result<Self, VirtioError> {
        let features = dev.begin_init(F_VERSION_1, F_ACCESS_PLATFORM | F_MAC)?;
        let mut mac = [0x52, 0x54, 0, 0xdd, 0, 1];
        if features & F_MAC != 0 {
            let cfg = dev
                .device_config()
                .ok_or(VirtioError::BadCapability(super::pci::CAP_DEVICE))?;
            if cfg.len() < 6 {
                return Err(VirtioError::BadCapability(super::pci::CAP_DEVICE));
            }
            for (i, byte) in mac.iter_mut().enumerate() {
                *byte = cfg.read8(i);
            }
        }
        let mut queue = |index: u16| -> Result<SplitQueue<P>, VirtioError> {
            let max = dev.max_queue_size(index);
            if max < BUFFERS {
                return Err(VirtioError::BadQueue(index));
            }
            SplitQueue::new(alloc, BUFFERS).map_err(VirtioError::Queue)
        };
        let rx = queue(RX)?;
        let tx = queue(TX)?;
        let mut pages = |n: u16| -> Result<Vec<P>, VirtioError> {
            (0..n)
                .map(|_| alloc.alloc_page().map_err(|_| VirtioError::NoMemory))
                .collect()
        };
        let rx_pages = pages(BUFFERS)?;
        let tx_pages = pages(BUFFERS)?;
        dev.setup_queue(RX, &rx, vectors.0)?;
        dev.setup_queue(TX, &tx, vectors.1)?;
        let mut net = Self {
            dev,
            rx,
            tx,
            rx_pages,
            rx_by_head: alloc::vec![None; usize::from(BUFFERS)],
            tx_pages,
            tx_free: (0..BUFFERS).rev().collect(),
            tx_by_head: alloc::vec![None; usize::from(BUFFERS)],
            mac,
            dropped: 0,
        };
        for index in 0..BUFFERS {
            net.post_rx(index)?;
        }
        net.dev.driver_ok();
        net.dev.notify(RX);
        Ok(net)
    }

    fn post_rx(&mut self, index: u16) -> Result<(), VirtioError> {
        let page = &self.rx_pages[usize::from(index)];
        let head = self
            .rx
            .push(&[Buffer::writable(Segment::page(page))])
            .map_err(VirtioError::Queue)?;
        self.rx_by_head[usize::from(head)] = Some(index);
        Ok(())
    }

    /// The transport.
    pub fn transport(&self) -> &VirtioPci<W> {
        &self.dev
    }
}

impl<W: RegisterWindow, P: DmaPage> Nic for VirtioNet<W, P> {
    fn mac(&self) -> Mac {
        self.mac
    }

    fn transmit(&mut self, frame: &[u8]) -> Result<(), NetError> {
        if frame.len() < 14 || frame.len() > MAX_FRAME {
            return Err(NetError::BadLength);
        }
        let index = match self.tx_free.pop() {
            Some(index) => index,
            None => {
                self.reclaim();
                self.tx_free.pop().ok_or(NetError::Busy)?
            }
        };
        let page = &mut self.tx_pages[usize::from(index)];
        page.write(0, &[0; HEADER_LEN]);
        page.write(HEADER_LEN, frame);
        let seg = Segment::within(page, 0, HEADER_LEN + frame.len()).ok_or(NetError::BadLength)?;
        match self.tx.push(&[Buffer::readable(seg)]) {
            Ok(head) => self.tx_by_head[usize::from(head)] = Some(index),
            Err(_) => {
                self.tx_free.push(index);
                return Err(NetError::Busy);
            }
        }
        if self.tx.should_notify() {
            self.dev.notify(TX);
        }
        Ok(())
    }

    fn receive(&mut self, buf: &mut [u8]) -> Option<usize> {
        loop {
            let used = self.rx.pop_used().ok()??;
            let index = self.rx_by_head[usize::from(used.head)].take()?;
            let len = used.len as usize;
            let good = (HEADER_LEN + 14..=PAGE_SIZE).contains(&len);
            let frame_len = len.saturating_sub(HEADER_LEN);
            if good {
                let n = frame_len.min(buf.len());
                self.rx_pages[usize::from(index)].read(HEADER_LEN, &mut buf[..n]);
            } else {
                self.dropped += 1;
            }
            if self.post_rx(index).is_ok() && self.rx.should_notify() {
                self.dev.notify(RX);
            }
            if good {
                return Some(frame_len);
            }
        }
    }

    fn has_received(&self) -> bool {
        self.rx.has_used()
    }

    fn reclaim(&mut self) -> usize {
        let mut count = 0;
        while let Ok(Some(used)) = self.tx.pop_used() {
            if let Some(index) = self.tx_by_head[usize::from(used.head)].take() {
                self.tx_free.push(index);
                count += 1;
            }
        }
        count
    }
}

#[cfg(test)]
mod tests {
    use alloc::rc::Rc;
    use alloc::vec;
    use core::cell::RefCell;

    use super::*;
    use crate::net::{arp_reply_from, arp_request};
    use crate::sim::SimMemory;
    use crate::virtio::pci::device::{bar, config_space, SimVirtio};
    use crate::virtio::pci::{VirtioPciCaps, NO_VECTOR};

    const MAC: Mac = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
    const GW: Mac = [0x52, 0x55, 10, 0, 2, 2];

    /// A NIC wired to a peer that answers ARP requests for 10.0.2.2 (the
    /// answers wait until the next receive-queue notification or transmit).
    #[test]
    fn arp_exchange_through_the_queues() {
        let mem = SimMemory::new();
        let mut config = vec![0u8; 16];
        config[..6].copy_from_slice(&MAC);
        let model = Rc::new(RefCell::new(SimVirtio::new(
            mem.clone(),
            F_VERSION_1 | F_ACCESS_PLATFORM | F_MAC,
            &[256, 256],
            config,
        )));
        let pending: Rc<RefCell<Vec<Vec<u8>>>> = Rc::default();
        let sent = pending.clone();
        let rx_queue: Rc<RefCell<Vec<(u16, u64)>>> = Rc::default();
        let rx_posted = rx_queue.clone();
        model.borrow_mut().handler = Some(alloc::boxed::Box::new(move |index, q, _| {
            if index == RX {
                while let Some(chain) = q.pop_avail() {
                    assert!(chain.buffers[0].2, "receive buffers are device-writable");
                    rx_posted
                        .borrow_mut()
                        .push((chain.head, chain.buffers[0].0));
                }
            } else {
                while let Some(chain) = q.pop_avail() {
                    let (addr, len, writes) = chain.buffers[0];
                    assert!(!writes);
                    let bytes = q.mem.read_vec(addr, len as usize);
                    assert_eq!(&bytes[..HEADER_LEN], &[0; HEADER_LEN]);
                    let req = &bytes[HEADER_LEN..];
                    // Answer "who has 10.0.2.2".
                    if req[12..14] == [8, 6] && req[38..42] == [10, 0, 2, 2] {
                        let mut r = vec![0u8; 60];
                        r[0..6].copy_from_slice(&req[6..12]);
                        r[6..12].copy_from_slice(&GW);
                        r[12..20].copy_from_slice(&req[12..20]);
                        r[20..22].copy_from_slice(&[0, 2]);
                        r[22..28].copy_from_slice(&GW);
                        r[28..32].copy_from_slice(&[10, 0, 2, 2]);
                        r[32..38].copy_from_slice(&req[22..28]);
                        r[38..42].copy_from_slice(&req[28..32]);
                        sent.borrow_mut().push(r);
                    }
                    q.push_used(u32::from(chain.head), 0);
                }
            }
        }));
        let caps = VirtioPciCaps::find(&config_space(0x1041)).unwrap();
        let dev = VirtioPci::new(&caps, |_| Some(bar(&model))).unwrap();
        let mut nic = VirtioNet::new(dev, &mut mem.allocator(), (NO_VECTOR, NO_VECTOR)).unwrap();
        assert_eq!(nic.mac(), MAC);
        assert_eq!(
            rx_queue.borrow().len(),
            usize::from(BUFFERS),
            "all receive pages posted"
        );
        let mut buf = [0u8; 2048];
        assert!(!nic.has_received());
        assert_eq!(nic.receive(&mut buf), None);
        nic.transmit(&arp_request(MAC, [10, 0, 2, 15], [10, 0, 2, 2]))
            .unwrap();
        assert_eq!(nic.reclaim(), 1);
        // The device delivers the reply into the first posted page.
        let reply = pending.borrow_mut().pop().expect("peer answered");
        let (head, addr) = rx_queue.borrow_mut().remove(0);
        {
            let mut m = model.borrow_mut();
            mem.write(addr, &[0; HEADER_LEN]);
            mem.write(addr + HEADER_LEN as u64, &reply);
            m.live[usize::from(RX)]
                .as_mut()
                .unwrap()
                .push_used(u32::from(head), (HEADER_LEN + reply.len()) as u32);
        }
        assert!(
            nic.has_received(),
            "the used entry is visible before receive"
        );
        let n = nic.receive(&mut buf).expect("a frame");
        assert!(!nic.has_received());
        assert_eq!(arp_reply_from(&buf[..n], MAC, [10, 0, 2, 2]), Some(GW));
        assert_eq!(
            rx_queue.borrow().len(),
            usize::from(BUFFERS),
            "page posted again"
        );
        // A used length shorter than the header is dropped, the page reposted.
        let (head, _) = rx_queue.borrow_mut().remove(0);
        model.borrow_mut().live[usize::from(RX)]
            .as_mut()
            .unwrap()
            .push_used(u32::from(head), 3);
        assert_eq!(nic.receive(&mut buf), None);
        assert_eq!(nic.dropped, 1);
        assert_eq!(nic.transmit(&[0; 10]), Err(NetError::BadLength));
        assert_eq!(nic.transmit(&[0; MAX_FRAME + 1]), Err(NetError::BadLength));
    }
}
