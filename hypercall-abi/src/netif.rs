//! netif (SPEC.md §14, NET-*): the network-interface ring protocol — since ABI 0.5.
//!
//! A frontend (a guest's *vif*) has two rings, published in its devbus
//! record: **tx** (frames the guest sends: [`NetifTxRequest`] →
//! [`NetifTxResponse`]) and **rx** (empty pages the guest lends for frames
//! it receives: [`NetifRxRequest`] → [`NetifRxResponse`]). One frame fits
//! one page: at most [`NETIF_MAX_FRAME`] bytes of Ethernet header and
//! payload, no checksum offload, no segmentation.
//!
//! The backend copies each request out once (RING-5) and checks the copy
//! with [`check_tx`]; it moves tx frames out and rx frames in with grant
//! copies, so the frontend's pages are never mapped (NET-3).

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Largest frame: a 14-byte Ethernet header and a 1500-byte payload.
pub const NETIF_MAX_FRAME: u16 = 1514;
/// Smallest frame: an Ethernet header.
pub const NETIF_MIN_FRAME: u16 = 14;

/// Response status: done.
pub const NETIF_RSP_OKAY: i16 = 0;
/// Response status: the request was malformed (or its grant unusable).
pub const NETIF_RSP_ERROR: i16 = -1;
/// Response status: the frame was dropped (no destination had room).
pub const NETIF_RSP_DROPPED: i16 = -2;

/// A frame to send, `[FRONT]`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct NetifTxRequest {
    /// A grant (read-only suffices) of the page holding the frame.
    pub gref: u32,
    /// Offset of the frame in the page.
    pub offset: u16,
    /// Zero (no flags are defined).
    pub flags: u16,
    /// Echoed in the response.
    pub id: u16,
    /// Frame length, `NETIF_MIN_FRAME ..= NETIF_MAX_FRAME`.
    pub size: u16,
    /// Zero.
    pub pad: u32,
}
const _: () = assert!(core::mem::size_of::<NetifTxRequest>() == 16);
const _: () = assert!(core::mem::offset_of!(NetifTxRequest, id) == 8);

/// The outcome of a tx request, `[BACK]`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct NetifTxResponse {
    /// The request's `id`.
    pub id: u16,
    /// `NETIF_RSP_*`.
    pub status: i16,
    /// Zero.
    pub pad: u32,
}
const _: () = assert!(core::mem::size_of::<NetifTxResponse>() == 8);

/// An empty page lent for one received frame, `[FRONT]`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct NetifRxRequest {
    /// Echoed in the response.
    pub id: u16,
    /// Zero.
    pub pad: u16,
    /// A writable grant of the page.
    pub gref: u32,
}
const _: () = assert!(core::mem::size_of::<NetifRxRequest>() == 8);

/// A received frame, `[BACK]`: copied to offset `offset` of the request's page.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct NetifRxResponse {
    /// The request's `id`.
    pub id: u16,
    /// Where the frame starts in the page.
    pub offset: u16,
    /// Zero.
    pub flags: u16,
    /// The frame's length (> 0), or `NETIF_RSP_ERROR` when the page could not be written.
    pub status: i16,
}
const _: () = assert!(core::mem::size_of::<NetifRxResponse>() == 8);

/// Why a tx request is refused (`NETIF_RSP_ERROR`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxReject {
    /// Shorter than an Ethernet header or longer than `NETIF_MAX_FRAME`.
    BadSize,
    /// The frame crosses the end of its page.
    CrossesPage,
    /// `flags` or `pad` not zero.
    NonZeroPad,
}

/// Checks a copied-out tx request (NET-2).
pub fn check_tx(req: &NetifTxRequest) -> Result<(), TxReject> {
    if req.flags != 0 || req.pad != 0 {
        return Err(TxReject::NonZeroPad);
    }
    if !(NETIF_MIN_FRAME..=NETIF_MAX_FRAME).contains(&req.size) {
        return Err(TxReject::BadSize);
    }
    if u32::from(req.offset) + u32::from(req.size) > crate::PAGE_SIZE as u32 {
        return Err(TxReject::CrossesPage);
    }
    Ok(())
}

/// Checks a copied-out rx request (NET-2): only its padding can be wrong.
pub fn check_rx(req: &NetifRxRequest) -> bool {
    req.pad == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn limits() {
        let ok = NetifTxRequest {
            gref: 1,
            offset: 0,
            size: 60,
            ..NetifTxRequest::default()
        };
        assert_eq!(check_tx(&ok), Ok(()));
        assert_eq!(
            check_tx(&NetifTxRequest { size: 13, ..ok }),
            Err(TxReject::BadSize)
        );
        assert_eq!(
            check_tx(&NetifTxRequest { size: 1515, ..ok }),
            Err(TxReject::BadSize)
        );
        assert_eq!(
            check_tx(&NetifTxRequest {
                offset: 4000,
                size: 100,
                ..ok
            }),
            Err(TxReject::CrossesPage)
        );
        assert_eq!(
            check_tx(&NetifTxRequest { flags: 1, ..ok }),
            Err(TxReject::NonZeroPad)
        );
        assert!(check_tx(&NetifTxRequest {
            offset: 4096 - 1514,
            size: 1514,
            ..ok
        })
        .is_ok());
    }

    proptest! {
        /// NET-2: an accepted tx frame lies inside its page and within the size limits.
        #[test]
        fn accepted_tx_frames_stay_in_their_page(
            gref in any::<u32>(), offset in any::<u16>(), size in any::<u16>(),
            flags in prop_oneof![Just(0u16), any::<u16>()], id in any::<u16>(),
        ) {
            let req = NetifTxRequest { gref, offset, flags, id, size, pad: 0 };
            if check_tx(&req).is_ok() {
                prop_assert!(u32::from(offset) + u32::from(size) <= 4096);
                prop_assert!((14..=1514).contains(&size));
                prop_assert_eq!(flags, 0);
            }
        }
    }
}
