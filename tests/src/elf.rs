//! ELF headers for tests: enough of a program of another architecture for the kernel (and
//! the agent's platform check) to refuse it.

/// The 64-byte header of a 64-bit little-endian executable for `machine` (`e_machine`:
/// 62 x86-64, 183 AArch64, 40 ARM).
pub fn header(machine: u16) -> Vec<u8> {
    let mut header = vec![0u8; 64];
    header[..4].copy_from_slice(b"\x7fELF");
    header[4] = 2; // 64-bit
    header[5] = 1; // little endian
    header[6] = 1; // ELF version
    header[16..18].copy_from_slice(&2u16.to_le_bytes()); // executable
    header[18..20].copy_from_slice(&machine.to_le_bytes());
    header[20..24].copy_from_slice(&1u32.to_le_bytes());
    header
}
