//! Registering owned file descriptors with tokio's reactor.

use std::io;
use std::os::fd::AsFd;

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// Types that own one fd for their whole life: the fd `as_raw_fd` returns stays open and the
/// same until the value is dropped, which is what tokio's registration requires.
pub trait OwnsItsFd: std::os::fd::AsRawFd + AsFd {}

impl OwnsItsFd for std::os::fd::OwnedFd {}
impl OwnsItsFd for aya::maps::RingBuf<aya::maps::MapData> {}
impl<T> OwnsItsFd for aya_log::EbpfLogger<T> {}

/// Wraps `inner` so async code can wait until its fd is readable.
pub fn watch_readable<T: OwnsItsFd>(inner: T) -> io::Result<AsyncFd<T>> {
    // SAFETY: OwnsItsFd guarantees the fd is valid and unchanged for the AsyncFd's lifetime,
    // since the AsyncFd owns `inner`.
    unsafe { AsyncFd::register_with_interest(inner, Interest::READABLE) }.map_err(io::Error::from)
}
