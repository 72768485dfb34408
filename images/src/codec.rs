//! Layer codecs: turn a layer blob (tar, tar+gzip, tar+zstd) into its uncompressed tar stream.

use std::io::{self, BufRead, BufReader, Read};

use crate::media_type::Compression;

/// Largest zstd window a layer decoder accepts (128 MiB, the `--long=27` limit): bounds memory
/// against a hostile frame header that asks for gigabytes.
pub const MAX_ZSTD_WINDOW_LOG: u32 = 27;

/// A reader of the uncompressed tar stream of a layer.
pub fn decompress<'a, R: Read + 'a>(
    blob: R,
    compression: Compression,
) -> io::Result<Box<dyn Read + 'a>> {
    Ok(match compression {
        Compression::None => Box::new(blob),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(blob))),
        Compression::Zstd => {
            let mut decoder = zstd::stream::read::Decoder::new(blob)?;
            decoder.window_log_max(MAX_ZSTD_WINDOW_LOG)?;
            Box::new(decoder)
        }
    })
}

/// Like [`decompress`], but the compression is read from the first bytes of the blob.
pub fn decompress_sniffed<'a, R: Read + 'a>(blob: R) -> io::Result<Box<dyn Read + 'a>> {
    let mut buffered = BufReader::new(blob);
    let compression = Compression::sniff(buffered.fill_buf()?);
    decompress(buffered, compression)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn decompress_reads_all_three_encodings() {
        let data = b"layer bytes ".repeat(1000);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        gz.write_all(&data).unwrap();
        let gz = gz.finish().unwrap();
        let zst = zstd::encode_all(&data[..], 3).unwrap();
        for blob in [data.clone(), gz, zst] {
            let mut out = Vec::new();
            decompress_sniffed(&blob[..])
                .unwrap()
                .read_to_end(&mut out)
                .unwrap();
            assert_eq!(out, data);
        }
    }

    #[test]
    fn truncated_gzip_is_an_error() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        gz.write_all(&[7u8; 5000]).unwrap();
        let gz = gz.finish().unwrap();
        let mut out = Vec::new();
        let res = decompress(&gz[..gz.len() / 2], Compression::Gzip)
            .unwrap()
            .read_to_end(&mut out);
        assert!(res.is_err());
    }
}
