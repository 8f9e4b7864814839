//! Reading the machine code of probed functions (x86-64), with `iced-x86`.

use std::{
    fs::File,
    io::{Read as _, Seek as _, SeekFrom},
    path::Path,
};

use iced_x86::{Decoder, DecoderOptions, FlowControl, InstructionInfoFactory, OpAccess, Register};

/// The registers that carry the first six integer arguments (System V x86-64).
const ARGUMENT_REGISTERS: [Register; 6] = [
    Register::RDI,
    Register::RSI,
    Register::RDX,
    Register::RCX,
    Register::R8,
    Register::R9,
];

/// The file offset of the second instruction of the function at `offset` in `path`, when an
/// entry probe placed there sees the same arguments as one on the first: the first instruction
/// neither branches nor writes an argument register. Another tracer's uprobe on the first
/// instruction (with a reference counter the kernel will not let a second uprobe differ from)
/// can then be left alone. `None` otherwise, or when the code cannot be read.
#[must_use]
pub fn entry_after_first_instruction(path: &Path, offset: u64) -> Option<u64> {
    let mut bytes = [0u8; 16];
    let mut f = File::open(path).ok()?;
    f.seek(SeekFrom::Start(offset)).ok()?;
    let n = f.read(&mut bytes).ok()?;
    second_instruction(&bytes[..n]).map(|len| offset + len)
}

/// The length of the first instruction of `code` when moving an entry probe past it keeps the
/// arguments where they were.
fn second_instruction(code: &[u8]) -> Option<u64> {
    let mut decoder = Decoder::with_ip(64, code, 0, DecoderOptions::NONE);
    let instruction = decoder.decode();
    if instruction.is_invalid() || instruction.flow_control() != FlowControl::Next {
        return None;
    }
    let mut info = InstructionInfoFactory::new();
    let writes_an_argument = info.info(&instruction).used_registers().iter().any(|r| {
        !matches!(
            r.access(),
            OpAccess::Read | OpAccess::CondRead | OpAccess::NoMemAccess
        ) && ARGUMENT_REGISTERS.contains(&r.register().full_register())
    });
    (!writes_an_argument).then_some(instruction.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stack_adjustment_can_be_stepped_over_but_not_an_argument_write_or_a_branch() {
        // sub rsp, 0x18 (how OpenSSL 3's SSL_write starts)
        assert_eq!(second_instruction(&[0x48, 0x83, 0xec, 0x18]), Some(4));
        // endbr64
        assert_eq!(second_instruction(&[0xf3, 0x0f, 0x1e, 0xfa]), Some(4));
        // push rbp
        assert_eq!(second_instruction(&[0x55]), Some(1));
        // mov rdi, rax: the first argument changes
        assert_eq!(second_instruction(&[0x48, 0x89, 0xc7]), None);
        // xor edx, edx: the third argument (as its 32-bit half)
        assert_eq!(second_instruction(&[0x31, 0xd2]), None);
        // jmp rel32: a tail call
        assert_eq!(second_instruction(&[0xe9, 0, 0, 0, 0]), None);
        // ret
        assert_eq!(second_instruction(&[0xc3]), None);
        assert_eq!(second_instruction(&[]), None);
    }
}
