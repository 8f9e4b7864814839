//! eBPF programs of taskless-agent. One module per hook family (and `emit`, the records they
//! all send); each probe is a thin wrapper over a `try_` function. Kept small on purpose: this
//! code runs inside every TLS call of the observed programs, so everything user space can do is
//! left to user space.
#![no_std]
#![no_main]

mod emit;
mod gnutls;
mod gotls;
mod maps;
mod nss;
mod openssl;
mod rustls;
mod sockets;
mod syscalls;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
