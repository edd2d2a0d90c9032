//! Error codes returned by hypercalls (SPEC.md §2.3, HC-4).
//!
//! A hypercall returns a non-negative value on success and `-errno` on failure.
//! The error type is open: an unknown code from a newer hypervisor is still
//! representable and printable.

use core::fmt;

/// A hypercall error code (positive; hypercalls return it negated).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Errno(pub u16);

impl Errno {
    /// Operation not permitted: the caller lacks the capability.
    pub const EPERM: Errno = Errno(1);
    /// No such entry (e.g. no trap handler, unknown sub-op target).
    pub const ENOENT: Errno = Errno(2);
    /// No such domain.
    pub const ESRCH: Errno = Errno(3);
    /// Argument list too long (a batch larger than the documented maximum).
    pub const E2BIG: Errno = Errno(7);
    /// Try again (the operation was preempted; see continuations).
    pub const EAGAIN: Errno = Errno(11);
    /// Out of memory.
    pub const ENOMEM: Errno = Errno(12);
    /// Permission denied by the frame table (type or ownership conflict).
    pub const EACCES: Errno = Errno(13);
    /// A guest pointer could not be read or written.
    pub const EFAULT: Errno = Errno(14);
    /// Resource busy (in use).
    pub const EBUSY: Errno = Errno(16);
    /// Already exists.
    pub const EEXIST: Errno = Errno(17);
    /// Invalid argument.
    pub const EINVAL: Errno = Errno(22);
    /// No space left (e.g. every event-channel port in use).
    pub const ENOSPC: Errno = Errno(28);
    /// Numerical result out of range.
    pub const ERANGE: Errno = Errno(34);
    /// Unknown hypercall or sub-operation.
    pub const ENOSYS: Errno = Errno(38);

    /// The value a hypercall puts in `rax` for this error.
    pub const fn to_return(self) -> i64 {
        -(self.0 as i64)
    }

    /// Splits a raw hypercall return value into success or error.
    pub const fn check(ret: i64) -> Result<u64, Errno> {
        if ret >= 0 {
            Ok(ret as u64)
        } else if ret >= -(u16::MAX as i64) {
            Err(Errno((-ret) as u16))
        } else {
            // Outside the documented range: still an error, never a success.
            Err(Errno(u16::MAX))
        }
    }

    /// The symbolic name, if this is a known code.
    pub const fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            1 => "EPERM",
            2 => "ENOENT",
            3 => "ESRCH",
            7 => "E2BIG",
            11 => "EAGAIN",
            12 => "ENOMEM",
            13 => "EACCES",
            14 => "EFAULT",
            16 => "EBUSY",
            17 => "EEXIST",
            22 => "EINVAL",
            28 => "ENOSPC",
            34 => "ERANGE",
            38 => "ENOSYS",
            _ => return None,
        })
    }
}

impl fmt::Debug for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "Errno({})", self.0),
        }
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        assert_eq!(Errno::check(Errno::EINVAL.to_return()), Err(Errno::EINVAL));
        assert_eq!(Errno::check(0), Ok(0));
        assert_eq!(Errno::check(42), Ok(42));
        assert_eq!(Errno::check(i64::MIN), Err(Errno(u16::MAX)));
        assert_eq!(Errno(999).name(), None);
    }
}
