//! The kernel's ring buffer, read through one mapping of its data pages.
//!
//! The kernel lets user space map a ring buffer's data pages twice in a row, so that a record
//! that wraps around the end reads as one slice; aya's reader maps them so. Every page of the
//! mapping is resident from the start (the kernel inserts them all at `mmap`), so that doubles
//! what the ring adds to the agent's resident set (32 MiB for the default 16 MiB ring) without
//! a byte more of memory. This reader maps the data pages once and copies the rare record that
//! wraps into a buffer of its own. The protocol is the kernel's (`kernel/bpf/ringbuf.c`), as
//! libbpf and aya follow it: a consumer position on a writable page, a producer position on the
//! read-only page before the data, an 8-byte header before each record whose length carries a
//! busy bit (being written) and a discard bit (dropped by its program).

use std::{
    os::fd::{AsFd as _, AsRawFd, RawFd},
    ptr::NonNull,
    sync::atomic::{AtomicU32, AtomicUsize, Ordering},
};

use aya::maps::MapData;

/// The record is still being written.
const BUSY_BIT: u32 = 1 << 31;
/// The record was discarded by its program.
const DISCARD_BIT: u32 = 1 << 30;
/// Size of the header before each record.
const HEADER: usize = 8;

/// Why the ring could not be mapped.
#[derive(Debug, thiserror::Error)]
pub enum RingError {
    /// The kernel did not describe the map.
    #[error("reading the ring buffer's size: {0}")]
    Info(String),
    /// The size is not a power of two number of pages.
    #[error("ring buffer size {0} is not a power of two multiple of the page size")]
    Size(usize),
    /// `mmap` failed.
    #[error("mapping the ring buffer: {0}")]
    Map(std::io::Error),
}

/// One `mmap`ed region, unmapped on drop.
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

impl Mapping {
    fn new(fd: RawFd, len: usize, prot: i32, offset: usize) -> Result<Self, RingError> {
        let offset = libc::off_t::try_from(offset).map_err(|_| RingError::Size(offset))?;
        // SAFETY: a fresh shared mapping of the map's fd; the kernel checks length and offset.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_SHARED,
                fd,
                offset,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(RingError::Map(std::io::Error::last_os_error()));
        }
        let ptr = NonNull::new(ptr.cast::<u8>())
            .ok_or_else(|| RingError::Map(std::io::Error::other("mmap returned null")))?;
        Ok(Self { ptr, len })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the region was mapped by `Mapping::new` and nothing refers to it any more.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

/// A BPF ring buffer map, read by one consumer.
pub struct Ring {
    /// Keeps the map (its fd) alive as long as the mappings.
    map: MapData,
    /// The consumer page: the consumer position, written by this reader.
    consumer: Mapping,
    /// The producer page, then the data pages once.
    producer: Mapping,
    page: usize,
    size: usize,
    /// Where this reader is (bytes consumed since the ring was made, wrapping).
    pos: usize,
    /// Bytes of the last record handed out, to consume before the next.
    pending: usize,
    /// A record that wraps around the end of the data, made whole.
    wrapped: Vec<u8>,
    /// A record header could not be sound: nothing more is read (said once).
    stopped: bool,
}

// SAFETY: the mappings are plain memory owned by this value; the reader thread alone uses it.
unsafe impl Send for Ring {}

impl Ring {
    /// Maps the ring buffer `map` for reading.
    ///
    /// # Errors
    /// [`RingError`] when the kernel does not describe the map or refuses the mappings.
    pub fn new(map: MapData) -> Result<Self, RingError> {
        let size = map
            .info()
            .map_err(|e| RingError::Info(e.to_string()))?
            .max_entries() as usize;
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        if !size.is_power_of_two() || size < page {
            return Err(RingError::Size(size));
        }
        let fd = map.fd().as_fd().as_raw_fd();
        let consumer = Mapping::new(fd, page, libc::PROT_READ | libc::PROT_WRITE, 0)?;
        let producer = Mapping::new(fd, page + size, libc::PROT_READ, page)?;
        // SAFETY: the consumer page starts with the kernel's `consumer_pos`.
        let pos = unsafe { consumer.ptr.cast::<AtomicUsize>().as_ref() }.load(Ordering::Acquire);
        Ok(Self {
            map,
            consumer,
            producer,
            page,
            size,
            pos,
            pending: 0,
            stopped: false,
            wrapped: Vec::new(),
        })
    }

    fn consumer_pos(&self) -> &AtomicUsize {
        // SAFETY: the consumer page starts with an aligned `unsigned long`, written only here.
        unsafe { self.consumer.ptr.cast::<AtomicUsize>().as_ref() }
    }

    fn producer_pos(&self) -> usize {
        // SAFETY: the producer page starts with the kernel's `producer_pos`, which it writes with
        // release ordering after a record's header.
        unsafe { self.producer.ptr.cast::<AtomicUsize>().as_ref() }.load(Ordering::Acquire)
    }

    /// The data pages.
    fn data(&self) -> *const u8 {
        // SAFETY: `page` is within the producer mapping (`page + size` long).
        unsafe { self.producer.ptr.as_ptr().add(self.page) }
    }

    /// Gives the space of the record handed out last back to the kernel.
    fn consume_pending(&mut self) {
        if self.pending > 0 {
            self.pos = self.pos.wrapping_add(self.pending);
            self.pending = 0;
            // The kernel reads it with acquire ordering before reusing the space.
            self.consumer_pos().store(self.pos, Ordering::Release);
        }
    }

    /// The next record, or `None` when the ring is empty for now (or the next record is still
    /// being written). The record's space is given back at the next call.
    pub fn next_record(&mut self) -> Option<&[u8]> {
        self.consume_pending();
        loop {
            if self.stopped || self.pos == self.producer_pos() {
                return None;
            }
            let offset = self.pos & (self.size - 1);
            // SAFETY: headers are 8-byte aligned and never cross the end (the size is a
            // multiple of the page); the kernel commits a header with a full barrier, paired
            // with this acquire load.
            let header =
                unsafe { &*self.data().add(offset).cast::<AtomicU32>() }.load(Ordering::Acquire);
            if header & BUSY_BIT != 0 {
                return None;
            }
            let len = (header & !(BUSY_BIT | DISCARD_BIT)) as usize;
            if len > self.size - HEADER {
                // Never from a sound kernel; stop reading rather than read outside the ring.
                tracing::error!(len, "ring buffer record longer than the ring; reader stops");
                self.stopped = true;
                return None;
            }
            let step = (HEADER + len).next_multiple_of(8);
            if header & DISCARD_BIT != 0 {
                self.pos = self.pos.wrapping_add(step);
                self.consumer_pos().store(self.pos, Ordering::Release);
                continue;
            }
            self.pending = step;
            let start = (offset + HEADER) & (self.size - 1);
            let first = len.min(self.size - start);
            // SAFETY: `start..start + first` and `0..len - first` lie within the data pages,
            // and the kernel does not write a committed record's bytes until it is consumed.
            return Some(unsafe {
                if first == len {
                    std::slice::from_raw_parts(self.data().add(start), len)
                } else {
                    self.wrapped.clear();
                    self.wrapped.extend_from_slice(std::slice::from_raw_parts(
                        self.data().add(start),
                        first,
                    ));
                    self.wrapped
                        .extend_from_slice(std::slice::from_raw_parts(self.data(), len - first));
                    &self.wrapped
                }
            });
        }
    }
}

impl AsRawFd for Ring {
    fn as_raw_fd(&self) -> RawFd {
        self.map.fd().as_fd().as_raw_fd()
    }
}
