//! Byte streams for state save and load that move at most N bytes per call.
//!
//! A CLAP host may hand the plugin a stream that reads or writes fewer bytes
//! than asked, and a plugin must loop until everything is through. Most
//! hosts move everything at once, which hides a plugin that forgets to loop;
//! these adapters make short transfers the rule, so that tests catch it.
//! Each counts its calls so a test can see the plugin really looped.

use std::io::{Read, Write};

/// Reads from a byte slice, at most `max_per_call` bytes per `read`.
#[derive(Debug)]
pub struct ChunkedReader<'a> {
    bytes: &'a [u8],
    at: usize,
    max_per_call: usize,
    calls: usize,
}

impl<'a> ChunkedReader<'a> {
    /// `max_per_call` of zero is taken as one: a reader that returns zero
    /// bytes means end of stream.
    pub fn new(bytes: &'a [u8], max_per_call: usize) -> ChunkedReader<'a> {
        ChunkedReader { bytes, at: 0, max_per_call: max_per_call.max(1), calls: 0 }
    }

    /// How many `read` calls were made.
    pub fn calls(&self) -> usize {
        self.calls
    }

    /// How many bytes were read.
    pub fn position(&self) -> usize {
        self.at
    }
}

impl Read for ChunkedReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.calls += 1;
        let n = buf.len().min(self.max_per_call).min(self.bytes.len() - self.at);
        buf[..n].copy_from_slice(&self.bytes[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Appends to a byte vector, at most `max_per_call` bytes per `write`.
#[derive(Debug, Default)]
pub struct ChunkedWriter {
    bytes: Vec<u8>,
    max_per_call: usize,
    calls: usize,
}

impl ChunkedWriter {
    /// `max_per_call` of zero is taken as one: a writer that accepts zero
    /// bytes tells the plugin the stream is broken.
    pub fn new(max_per_call: usize) -> ChunkedWriter {
        ChunkedWriter { bytes: Vec::new(), max_per_call: max_per_call.max(1), calls: 0 }
    }

    /// How many `write` calls were made.
    pub fn calls(&self) -> usize {
        self.calls
    }

    /// The bytes written so far.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Consumes the writer and returns the bytes written.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

impl Write for ChunkedWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.calls += 1;
        let n = buf.len().min(self.max_per_call);
        self.bytes.extend_from_slice(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_returns_at_most_n_bytes_per_call_and_everything_in_the_end() {
        let data: Vec<u8> = (0..=255).collect();
        let mut reader = ChunkedReader::new(&data, 7);
        let mut buf = [0u8; 100];
        assert_eq!(reader.read(&mut buf).unwrap(), 7);
        assert_eq!(&buf[..7], &data[..7]);
        assert_eq!(reader.read(&mut buf[..3]).unwrap(), 3, "never more than asked");
        let mut rest = Vec::new();
        reader.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, &data[10..]);
        assert_eq!(reader.position(), 256);
        assert_eq!(reader.read(&mut buf).unwrap(), 0, "end of stream");
        assert!(reader.calls() >= 256 / 7);
    }

    #[test]
    fn writer_accepts_at_most_n_bytes_per_call_and_write_all_loops() {
        let data: Vec<u8> = (0..100).collect();
        let mut writer = ChunkedWriter::new(16);
        assert_eq!(writer.write(&data).unwrap(), 16);
        assert_eq!(writer.bytes(), &data[..16]);
        writer.write_all(&data[16..]).unwrap();
        assert_eq!(writer.calls(), 7); // 16 * 6 = 96, then 4
        assert_eq!(writer.into_bytes(), data);
    }

    #[test]
    fn zero_means_one() {
        let mut writer = ChunkedWriter::new(0);
        assert_eq!(writer.write(b"abc").unwrap(), 1);
        let mut reader = ChunkedReader::new(b"abc", 0);
        let mut buf = [0u8; 3];
        assert_eq!(reader.read(&mut buf).unwrap(), 1);
    }

    #[test]
    fn they_work_through_clap_streams() {
        // The same path a plugin's state save/load takes: the clap_ostream /
        // clap_istream wrappers over our adapters.
        use clack_host::stream::{InputStream, OutputStream};
        let data: Vec<u8> = (0..50).collect();
        let mut writer = ChunkedWriter::new(5);
        {
            let mut out = OutputStream::from_writer(&mut writer);
            out.write_all(&data).unwrap();
        }
        assert_eq!(writer.calls(), 10);
        let bytes = writer.into_bytes();
        let mut reader = ChunkedReader::new(&bytes, 3);
        let mut back = Vec::new();
        {
            let mut input = InputStream::from_reader(&mut reader);
            input.read_to_end(&mut back).unwrap();
        }
        assert_eq!(back, data);
    }
}
