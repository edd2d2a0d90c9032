//! The virtio 1.x PCI transport (virtio 1.2 §4.1): vendor capabilities that
//! point at the common, notify, ISR and device configuration structures in
//! the BARs, and the initialisation sequence (§3.1.1) over them.
//!
//! Capabilities are device data: each window is checked to lie inside its
//! BAR (through [`RegisterWindow::window`]) before the driver touches it.

use super::queue::SplitQueue;
use super::{
    VirtioError, STATUS_ACKNOWLEDGE, STATUS_DRIVER, STATUS_DRIVER_OK, STATUS_FAILED,
    STATUS_FEATURES_OK,
};
use crate::dma::DmaPage;
use crate::pci::capability::ID_VENDOR;
use crate::pci::{Capabilities, ConfigSpace};
use crate::regs::RegisterWindow;

/// `cfg_type` of the common configuration.
pub const CAP_COMMON: u8 = 1;
/// `cfg_type` of the notification area.
pub const CAP_NOTIFY: u8 = 2;
/// `cfg_type` of the ISR status.
pub const CAP_ISR: u8 = 3;
/// `cfg_type` of the device-specific configuration.
pub const CAP_DEVICE: u8 = 4;

/// Common configuration register offsets (§4.1.4.3).
mod common {
    pub const DEVICE_FEATURE_SELECT: usize = 0;
    pub const DEVICE_FEATURE: usize = 4;
    pub const DRIVER_FEATURE_SELECT: usize = 8;
    pub const DRIVER_FEATURE: usize = 12;
    pub const MSIX_CONFIG: usize = 16;
    pub const NUM_QUEUES: usize = 18;
    pub const DEVICE_STATUS: usize = 20;
    pub const QUEUE_SELECT: usize = 22;
    pub const QUEUE_SIZE: usize = 24;
    pub const QUEUE_MSIX_VECTOR: usize = 26;
    pub const QUEUE_ENABLE: usize = 28;
    pub const QUEUE_NOTIFY_OFF: usize = 30;
    pub const QUEUE_DESC: usize = 32;
    pub const QUEUE_DRIVER: usize = 40;
    pub const QUEUE_DEVICE: usize = 48;
    pub const LEN: usize = 56;
}

/// "No MSI-X vector" for `msix_config` / `queue_msix_vector`.
pub const NO_VECTOR: u16 = 0xffff;

/// Where one structure is: BAR, offset, length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CapLocation {
    /// BAR index.
    pub bar: u8,
    /// Offset in the BAR.
    pub offset: u32,
    /// Length in bytes.
    pub length: u32,
}

/// The four structures of a modern virtio device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VirtioPciCaps {
    /// Common configuration.
    pub common: CapLocation,
    /// Notification area.
    pub notify: CapLocation,
    /// Bytes between queue notification addresses per `queue_notify_off`.
    pub notify_off_multiplier: u32,
    /// ISR status.
    pub isr: CapLocation,
    /// Device configuration (absent for some device types).
    pub device: Option<CapLocation>,
}

impl VirtioPciCaps {
    /// Reads the vendor capabilities of `cfg` (the first of each type wins).
    pub fn find(cfg: &impl ConfigSpace) -> Result<VirtioPciCaps, VirtioError> {
        let mut found: [Option<CapLocation>; 5] = [None; 5];
        let mut multiplier = 0;
        for cap in Capabilities::new(cfg).filter(|c| c.id == ID_VENDOR) {
            let cap_len = cfg.read8(cap.offset + 2);
            let cfg_type = cfg.read8(cap.offset + 3);
            if cap_len < 16 || !(1..=4).contains(&cfg_type) {
                continue;
            }
            let slot = &mut found[usize::from(cfg_type)];
            if slot.is_some() {
                continue;
            }
            let bar = cfg.read8(cap.offset + 4);
            if bar > 5 {
                continue;
            }
            *slot = Some(CapLocation {
                bar,
                offset: cfg.read32(cap.offset + 8),
                length: cfg.read32(cap.offset + 12),
            });
            if cfg_type == CAP_NOTIFY {
                if cap_len < 20 {
                    *slot = None;
                    continue;
                }
                multiplier = cfg.read32(cap.offset + 16);
            }
        }
        let need = |t: u8| found[usize::from(t)].ok_or(VirtioError::BadCapability(t));
        Ok(VirtioPciCaps {
            common: need(CAP_COMMON)?,
            notify: need(CAP_NOTIFY)?,
            notify_off_multiplier: multiplier,
            isr: need(CAP_ISR)?,
            device: found[usize::from(CAP_DEVICE)],
        })
    }
}

/// How many polls of the status register a reset may take.
const RESET_POLLS: u32 = 1_000_000;

/// A modern virtio PCI device's registers.
pub struct VirtioPci<W: RegisterWindow> {
    common: W,
    notify: W,
    notify_off_multiplier: u32,
    isr: W,
    device: Option<W>,
    /// Notification offsets of the queues set up so far (queue index <
    /// [`MAX_QUEUES`]), checked against the window at setup.
    notify_offsets: core::cell::Cell<[Option<usize>; MAX_QUEUES]>,
}

/// Queues whose notification offset the transport caches.
pub const MAX_QUEUES: usize = 4;

impl<W: RegisterWindow> VirtioPci<W> {
    /// Opens the structures `caps` names, in the BARs `bar(index)` returns
    /// (whole-BAR windows); every structure must lie inside its BAR.
    pub fn new(
        caps: &VirtioPciCaps,
        mut bar: impl FnMut(u8) -> Option<W>,
    ) -> Result<Self, VirtioError> {
        let mut open = |loc: &CapLocation, cfg_type: u8, min: usize| -> Result<W, VirtioError> {
            let whole = bar(loc.bar).ok_or(VirtioError::BarMissing(loc.bar))?;
            let length = loc.length as usize;
            if length < min {
                return Err(VirtioError::BadCapability(cfg_type));
            }
            whole
                .window(loc.offset as usize, length)
                .ok_or(VirtioError::BadCapability(cfg_type))
        };
        let common = open(&caps.common, CAP_COMMON, common::LEN)?;
        let notify = open(&caps.notify, CAP_NOTIFY, 2)?;
        let isr = open(&caps.isr, CAP_ISR, 1)?;
        let device = match &caps.device {
            Some(loc) => Some(open(loc, CAP_DEVICE, 1)?),
            None => None,
        };
        Ok(Self {
            common,
            notify,
            notify_off_multiplier: caps.notify_off_multiplier,
            isr,
            device,
            notify_offsets: core::cell::Cell::new([None; MAX_QUEUES]),
        })
    }

    /// Resets the device and waits until it says so.
    pub fn reset(&self) -> Result<(), VirtioError> {
        self.common.write8(common::DEVICE_STATUS, 0);
        for _ in 0..RESET_POLLS {
            if self.common.read8(common::DEVICE_STATUS) == 0 {
                return Ok(());
            }
            core::hint::spin_loop();
        }
        Err(VirtioError::ResetTimeout)
    }

    /// The device status.
    pub fn status(&self) -> u8 {
        self.common.read8(common::DEVICE_STATUS)
    }

    fn add_status(&self, bits: u8) {
        let now = self.status();
        self.common.write8(common::DEVICE_STATUS, now | bits);
    }

    /// Marks the device failed (the driver gave up on it).
    pub fn fail(&self) {
        self.add_status(STATUS_FAILED);
    }

    /// The device's feature bits.
    pub fn device_features(&self) -> u64 {
        let mut features = 0;
        for half in 0..2u32 {
            self.common.write32(common::DEVICE_FEATURE_SELECT, half);
            features |= u64::from(self.common.read32(common::DEVICE_FEATURE)) << (32 * half);
        }
        features
    }

    /// Reset, acknowledge, and negotiate: accepts `required | optional`
    /// bits the device offers; fails if it lacks a required one or refuses
    /// the set (§3.1.1 steps 1–6). Returns the negotiated bits.
    pub fn begin_init(&self, required: u64, optional: u64) -> Result<u64, VirtioError> {
        self.reset()?;
        self.add_status(STATUS_ACKNOWLEDGE);
        self.add_status(STATUS_DRIVER);
        let offered = self.device_features();
        let missing = required & !offered;
        if missing != 0 {
            self.fail();
            return Err(VirtioError::MissingFeatures(missing));
        }
        let accepted = offered & (required | optional);
        for half in 0..2u32 {
            self.common.write32(common::DRIVER_FEATURE_SELECT, half);
            self.common
                .write32(common::DRIVER_FEATURE, (accepted >> (32 * half)) as u32);
        }
        self.add_status(STATUS_FEATURES_OK);
        if self.status() & STATUS_FEATURES_OK == 0 {
            self.fail();
            return Err(VirtioError::FeaturesRefused);
        }
        self.common.write16(common::MSIX_CONFIG, NO_VECTOR);
        Ok(accepted)
    }

    /// Number of queues the device has.
    pub fn num_queues(&self) -> u16 {
        self.common.read16(common::NUM_QUEUES)
    }

    /// Largest size of queue `index` (0: the queue does not exist).
    pub fn max_queue_size(&self, index: u16) -> u16 {
        self.common.write16(common::QUEUE_SELECT, index);
        self.common.read16(common::QUEUE_SIZE)
    }

    /// Gives `queue` to the device as queue `index` with MSI-X vector
    /// `vector` ([`NO_VECTOR`] for none) and enables it.
    pub fn setup_queue<P: DmaPage>(
        &self,
        index: u16,
        queue: &SplitQueue<P>,
        vector: u16,
    ) -> Result<(), VirtioError> {
        let max = self.max_queue_size(index);
        if max == 0 || queue.size() > max {
            return Err(VirtioError::BadQueue(index));
        }
        let (desc, driver, device) = queue.addresses();
        self.common.write16(common::QUEUE_SIZE, queue.size());
        self.common.write64(common::QUEUE_DESC, desc);
        self.common.write64(common::QUEUE_DRIVER, driver);
        self.common.write64(common::QUEUE_DEVICE, device);
        self.common.write16(common::QUEUE_MSIX_VECTOR, vector);
        self.common.write16(common::QUEUE_ENABLE, 1);
        // Check the notification address now, so `notify` cannot leave the
        // window later.
        self.notify_offset(index)
            .ok_or(VirtioError::BadQueue(index))?;
        Ok(())
    }

    /// The offset of queue `index`'s notification register, if it lies in
    /// the notify window.
    fn notify_offset(&self, index: u16) -> Option<usize> {
        self.common.write16(common::QUEUE_SELECT, index);
        let off = usize::from(self.common.read16(common::QUEUE_NOTIFY_OFF));
        let at = off.checked_mul(self.notify_off_multiplier as usize)?;
        self.notify.window(at, 2).map(|_| at)
    }

    /// The driver is ready (§3.1.1 step 8).
    pub fn driver_ok(&self) {
        self.add_status(STATUS_DRIVER_OK);
    }

    /// Tells the device queue `index` has new buffers.
    pub fn notify(&self, index: u16) {
        let cached = self
            .notify_offsets
            .get()
            .get(usize::from(index))
            .copied()
            .flatten();
        if let Some(at) = cached.or_else(|| self.notify_offset(index)) {
            self.notify.write16(at, index);
        }
    }

    /// Reads (and so clears) the ISR status.
    pub fn isr(&self) -> u8 {
        self.isr.read8(0)
    }

    /// The device configuration window.
    pub fn device_config(&self) -> Option<&W> {
        self.device.as_ref()
    }
}

#[cfg(test)]
pub(crate) mod device {
    //! A simulated modern virtio PCI device: one BAR with the four
    //! structures, queues over simulated memory, and a handler that plays the
    //! device-specific part when a queue is notified.
    use alloc::boxed::Box;
    use alloc::rc::Rc;
    use alloc::vec::Vec;
    use core::cell::RefCell;

    use super::common;
    use crate::pci::testing::ArrayConfig;
    use crate::sim::{RegisterModel, SimMemory, SimWindow};
    use crate::virtio::queue::device::DeviceQueue;

    pub const COMMON_AT: usize = 0;
    pub const ISR_AT: usize = 0x1000;
    pub const DEVICE_AT: usize = 0x2000;
    pub const NOTIFY_AT: usize = 0x3000;
    pub const NOTIFY_MULTIPLIER: u32 = 4;
    pub const BAR_LEN: usize = 0x4000;

    /// What a device does when queue `index` is notified.
    pub type Handler = Box<dyn FnMut(u16, &mut DeviceQueue, &mut [u8])>;

    #[derive(Default, Clone, Copy)]
    pub struct QueueRegs {
        pub max: u16,
        pub size: u16,
        pub enable: u16,
        pub vector: u16,
        pub desc: u64,
        pub driver: u64,
        pub device: u64,
    }

    pub struct SimVirtio {
        pub mem: SimMemory,
        pub features: u64,
        pub driver_features: u64,
        pub feature_select: u32,
        pub driver_select: u32,
        pub status: u8,
        pub queue_select: u16,
        pub queues: Vec<QueueRegs>,
        pub live: Vec<Option<DeviceQueue>>,
        pub config: Vec<u8>,
        pub handler: Option<Handler>,
        pub notifications: usize,
        /// Refuse FEATURES_OK (a device that dislikes the driver's choice).
        pub refuse_features: bool,
    }

    impl SimVirtio {
        pub fn new(mem: SimMemory, features: u64, queue_max: &[u16], config: Vec<u8>) -> Self {
            Self {
                mem,
                features,
                driver_features: 0,
                feature_select: 0,
                driver_select: 0,
                status: 0,
                queue_select: 0,
                queues: queue_max
                    .iter()
                    .map(|&max| QueueRegs {
                        max,
                        ..Default::default()
                    })
                    .collect(),
                live: queue_max.iter().map(|_| None).collect(),
                config,
                handler: None,
                notifications: 0,
                refuse_features: false,
            }
        }

        fn queue(&mut self) -> Option<&mut QueueRegs> {
            self.queues.get_mut(usize::from(self.queue_select))
        }
    }

    fn set_part(target: &mut u64, shift: usize, size: usize, value: u64) {
        let mask = if size == 8 {
            u64::MAX
        } else {
            ((1u64 << (size * 8)) - 1) << shift
        };
        *target = (*target & !mask) | ((value << shift) & mask);
    }

    impl RegisterModel for SimVirtio {
        fn read(&mut self, offset: usize, size: usize) -> u64 {
            if (DEVICE_AT..NOTIFY_AT).contains(&offset) {
                let at = offset - DEVICE_AT;
                let mut bytes = [0u8; 8];
                for (i, b) in bytes.iter_mut().enumerate().take(size) {
                    *b = self.config.get(at + i).copied().unwrap_or(0);
                }
                return u64::from_le_bytes(bytes);
            }
            if offset == ISR_AT {
                return 1;
            }
            let q = self
                .queues
                .get(usize::from(self.queue_select))
                .copied()
                .unwrap_or_default();
            match offset {
                common::DEVICE_FEATURE => {
                    (self.features >> (32 * self.feature_select.min(1))) & 0xffff_ffff
                }
                common::NUM_QUEUES => self.queues.len() as u64,
                common::DEVICE_STATUS => u64::from(self.status),
                common::QUEUE_SELECT => u64::from(self.queue_select),
                common::QUEUE_SIZE => u64::from(if q.size == 0 { q.max } else { q.size }),
                common::QUEUE_ENABLE => u64::from(q.enable),
                common::QUEUE_NOTIFY_OFF => u64::from(self.queue_select),
                common::QUEUE_MSIX_VECTOR => u64::from(q.vector),
                _ => 0,
            }
        }

        fn write(&mut self, offset: usize, size: usize, value: u64) {
            if offset >= NOTIFY_AT {
                let index = ((offset - NOTIFY_AT) / NOTIFY_MULTIPLIER as usize) as u16;
                assert_eq!(u64::from(index), value, "notify value is the queue index");
                self.notifications += 1;
                if let (Some(Some(dq)), Some(handler)) =
                    (self.live.get_mut(usize::from(index)), self.handler.as_mut())
                {
                    handler(index, dq, &mut self.config);
                }
                return;
            }
            match offset {
                common::DEVICE_FEATURE_SELECT => self.feature_select = value as u32,
                common::DRIVER_FEATURE_SELECT => self.driver_select = value as u32,
                common::DRIVER_FEATURE => {
                    let shift = 32 * self.driver_select.min(1) as usize;
                    set_part(&mut self.driver_features, shift, 4, value);
                }
                common::DEVICE_STATUS => {
                    let mut status = value as u8;
                    if status == 0 {
                        self.driver_features = 0;
                        self.live.iter_mut().for_each(|q| *q = None);
                    }
                    if status & super::STATUS_FEATURES_OK != 0
                        && (self.refuse_features || self.driver_features & !self.features != 0)
                    {
                        status &= !super::STATUS_FEATURES_OK;
                    }
                    self.status = status;
                }
                common::MSIX_CONFIG => {}
                common::QUEUE_SELECT => self.queue_select = value as u16,
                common::QUEUE_SIZE => {
                    if let Some(q) = self.queue() {
                        q.size = value as u16;
                    }
                }
                common::QUEUE_MSIX_VECTOR => {
                    if let Some(q) = self.queue() {
                        q.vector = value as u16;
                    }
                }
                o if (common::QUEUE_DESC..common::LEN).contains(&o) => {
                    if let Some(q) = self.queue() {
                        let base = o & !7;
                        let shift = (o - base) * 8;
                        let field = match base {
                            common::QUEUE_DESC => &mut q.desc,
                            common::QUEUE_DRIVER => &mut q.driver,
                            _ => &mut q.device,
                        };
                        set_part(field, shift, size, value);
                    }
                }
                common::QUEUE_ENABLE => {
                    let index = usize::from(self.queue_select);
                    let mem = self.mem.clone();
                    if let Some(q) = self.queue() {
                        q.enable = value as u16;
                        let q = *q;
                        self.live[index] =
                            Some(DeviceQueue::new(mem, q.size, (q.desc, q.driver, q.device)));
                    }
                }
                _ => {}
            }
        }
    }

    /// A configuration space with the four capabilities, all in BAR 4.
    pub fn config_space(device_id: u16) -> ArrayConfig {
        let cfg = ArrayConfig::new();
        cfg.set32(0, (u32::from(device_id) << 16) | 0x1af4);
        cfg.set16(6, 0x10);
        cfg.set8(0x34, 0x40);
        let caps: [(u8, usize, usize); 4] = [
            (super::CAP_COMMON, COMMON_AT, 0x38),
            (super::CAP_ISR, ISR_AT, 1),
            (super::CAP_DEVICE, DEVICE_AT, 0x100),
            (super::CAP_NOTIFY, NOTIFY_AT, 0x1000),
        ];
        for (i, &(t, at, len)) in caps.iter().enumerate() {
            let o = 0x40 + i * 0x14;
            let next = if i + 1 < caps.len() { o + 0x14 } else { 0 };
            cfg.set8(o, 0x09);
            cfg.set8(o + 1, next as u8);
            cfg.set8(o + 2, if t == super::CAP_NOTIFY { 20 } else { 16 });
            cfg.set8(o + 3, t);
            cfg.set8(o + 4, 4);
            cfg.set32(o + 8, at as u32);
            cfg.set32(o + 12, len as u32);
            if t == super::CAP_NOTIFY {
                cfg.set32(o + 16, NOTIFY_MULTIPLIER);
            }
        }
        cfg
    }

    /// The device's BAR 4 as a window.
    pub fn bar(model: &Rc<RefCell<SimVirtio>>) -> SimWindow<SimVirtio> {
        SimWindow::new(model.clone(), BAR_LEN)
    }
}

#[cfg(test)]
mod tests {
    use alloc::rc::Rc;
    use core::cell::RefCell;

    use super::device::*;
    use super::*;
    use crate::sim::SimMemory;
    use crate::virtio::{F_ACCESS_PLATFORM, F_VERSION_1};

    #[test]
    fn finds_capabilities() {
        let cfg = config_space(0x1042);
        let caps = VirtioPciCaps::find(&cfg).unwrap();
        assert_eq!(
            caps.common,
            CapLocation {
                bar: 4,
                offset: 0,
                length: 0x38
            }
        );
        assert_eq!(caps.notify.offset, 0x3000);
        assert_eq!(caps.notify_off_multiplier, 4);
        assert_eq!(caps.device.unwrap().offset, 0x2000);
        // Without the common configuration the device is unusable.
        cfg.set8(0x43, 7);
        assert_eq!(
            VirtioPciCaps::find(&cfg),
            Err(VirtioError::BadCapability(CAP_COMMON))
        );
    }

    #[test]
    fn windows_outside_the_bar_are_refused() {
        let mem = SimMemory::new();
        let model = Rc::new(RefCell::new(SimVirtio::new(
            mem,
            F_VERSION_1,
            &[8],
            alloc::vec![],
        )));
        let cfg = config_space(0x1042);
        let mut caps = VirtioPciCaps::find(&cfg).unwrap();
        caps.notify.offset = (BAR_LEN - 0x10) as u32;
        assert!(matches!(
            VirtioPci::new(&caps, |_| Some(bar(&model))),
            Err(VirtioError::BadCapability(CAP_NOTIFY))
        ));
        let caps = VirtioPciCaps::find(&cfg).unwrap();
        assert!(matches!(
            VirtioPci::<crate::sim::SimWindow<SimVirtio>>::new(&caps, |_| None),
            Err(VirtioError::BarMissing(4))
        ));
    }

    #[test]
    fn negotiation() {
        let mem = SimMemory::new();
        let model = Rc::new(RefCell::new(SimVirtio::new(
            mem,
            F_VERSION_1 | F_ACCESS_PLATFORM | 0x20 | 0x1,
            &[8],
            alloc::vec![],
        )));
        let caps = VirtioPciCaps::find(&config_space(0x1041)).unwrap();
        let dev = VirtioPci::new(&caps, |_| Some(bar(&model))).unwrap();
        let got = dev
            .begin_init(F_VERSION_1, F_ACCESS_PLATFORM | 0x20 | 0x4)
            .unwrap();
        assert_eq!(
            got,
            F_VERSION_1 | F_ACCESS_PLATFORM | 0x20,
            "offered and wanted"
        );
        assert_eq!(model.borrow().driver_features, got);
        assert_eq!(
            dev.status(),
            STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK
        );
        assert_eq!(
            dev.begin_init(1 << 40, 0),
            Err(VirtioError::MissingFeatures(1 << 40))
        );
        assert_ne!(dev.status() & STATUS_FAILED, 0);
        model.borrow_mut().refuse_features = true;
        assert_eq!(
            dev.begin_init(F_VERSION_1, 0),
            Err(VirtioError::FeaturesRefused)
        );
    }
}
