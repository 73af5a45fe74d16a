//! Parsing of Intel DCAP quotes (header and SGX report body).
//!
//! This parser never panics: every length read from the input is checked
//! through a bounds-checked `Reader` before use. It understands quote versions 3 and 4 and
//! recognises EPID (version 2) and TDX quotes so that they can be rejected
//! with a clear error.

use thiserror::Error;

/// Length of the quote header in bytes (v3 and v4).
pub const HEADER_LEN: usize = 48;
/// Length of an SGX enclave report body in bytes.
pub const SGX_REPORT_BODY_LEN: usize = 384;
/// Length of a TDX 1.0 TD report body in bytes (v4 quotes).
pub const TDX_REPORT_BODY_LEN: usize = 584;
/// Largest quote we accept, as Gramine does (bytes).
pub const MAX_QUOTE_LEN: usize = 8192;
/// Intel's QE vendor ID.
pub const INTEL_QE_VENDOR_ID: [u8; 16] =
    [0x93, 0x9a, 0x72, 0x33, 0xf7, 0x9c, 0x4c, 0xa9, 0x94, 0x0a, 0x0d, 0xb3, 0x95, 0x7f, 0x06, 0x07];
/// TEE type value for SGX in a v4 header.
pub const TEE_TYPE_SGX: u32 = 0x0000_0000;
/// TEE type value for TDX in a v4 header.
pub const TEE_TYPE_TDX: u32 = 0x0000_0081;

/// ATTRIBUTES.FLAGS bit: the enclave was initialised (EINIT).
pub const ATTR_INIT: u64 = 1 << 0;
/// ATTRIBUTES.FLAGS bit: the enclave is a debug enclave.
pub const ATTR_DEBUG: u64 = 1 << 1;
/// ATTRIBUTES.FLAGS bit: the enclave runs in 64-bit mode.
pub const ATTR_MODE64BIT: u64 = 1 << 2;
/// ATTRIBUTES.FLAGS bit: the enclave may use the provisioning key.
pub const ATTR_PROVISIONKEY: u64 = 1 << 4;
/// ATTRIBUTES.FLAGS bit: the enclave may use the EINIT token key.
pub const ATTR_EINITTOKEN_KEY: u64 = 1 << 5;

/// Why a quote could not be parsed or is not an SGX DCAP quote.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum QuoteError {
    /// The input ended before a field could be read.
    #[error(
        "quote truncated: {field} needs {needed} bytes at offset {offset}, but the quote has {len} bytes"
    )]
    Truncated {
        /// Name of the field being read.
        field: &'static str,
        /// Offset of the field in the quote.
        offset: usize,
        /// Bytes needed for the field.
        needed: usize,
        /// Total quote length.
        len: usize,
    },
    /// A version 2 quote: EPID attestation, which this project does not support.
    #[error("quote version 2 is an EPID quote; EPID attestation is not supported (DCAP only)")]
    Epid,
    /// A TDX quote was given where an SGX quote is required.
    #[error(
        "quote version {version} has TEE type {tee_type:#x} (TDX), not SGX (0x0); only SGX enclave quotes are accepted"
    )]
    Tdx {
        /// Quote version.
        version: u16,
        /// TEE type from the header.
        tee_type: u32,
    },
    /// An unknown TEE type in a v4/v5 header.
    #[error("quote version {version} has unknown TEE type {tee_type:#x}; only SGX (0x0) is accepted")]
    UnknownTeeType {
        /// Quote version.
        version: u16,
        /// TEE type from the header.
        tee_type: u32,
    },
    /// A quote version this parser does not know.
    #[error("unsupported quote version {0} (expected 3, or 4 for the SGX form)")]
    UnsupportedVersion(u16),
    /// An attestation key type other than ECDSA-256-with-P-256.
    #[error("unsupported attestation key type {0} (expected 2 = ECDSA-256-with-P-256)")]
    UnsupportedKeyType(u16),
    /// The QE vendor ID is not Intel's.
    #[error("QE vendor ID {0} is not Intel's (939a7233f79c4ca9940a0db3957f0607)")]
    WrongVendor(String),
    /// The declared signature data length does not match the remaining bytes.
    #[error("signature_data_len is {declared} but {available} bytes follow it")]
    SignatureLength {
        /// Length declared in the quote.
        declared: u64,
        /// Bytes actually present.
        available: usize,
    },
    /// The quote is larger than [`MAX_QUOTE_LEN`].
    #[error("quote is {0} bytes, larger than the maximum of {MAX_QUOTE_LEN}")]
    TooLarge(usize),
}

/// A bounds-checked reader over untrusted bytes.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    pub(crate) fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], QuoteError> {
        let err = QuoteError::Truncated { field, offset: self.pos, needed: n, len: self.buf.len() };
        let end = self.pos.checked_add(n).ok_or(err.clone())?;
        let out = self.buf.get(self.pos..end).ok_or(err)?;
        self.pos = end;
        Ok(out)
    }

    pub(crate) fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], QuoteError> {
        let s = self.take(N, field)?;
        let mut out = [0u8; N];
        out.copy_from_slice(s);
        Ok(out)
    }

    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16, QuoteError> {
        Ok(u16::from_le_bytes(self.array(field)?))
    }

    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, QuoteError> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }
}

/// The 48-byte DCAP quote header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuoteHeader {
    /// Quote version (3 or 4).
    pub version: u16,
    /// Attestation key type (2 = ECDSA-256-with-P-256).
    pub att_key_type: u16,
    /// v4: TEE type (0 = SGX, 0x81 = TDX). v3: `att_key_data_0`, reported as 0 = SGX.
    pub tee_type: u32,
    /// QE SVN (informational).
    pub qe_svn: u16,
    /// PCE SVN (informational).
    pub pce_svn: u16,
    /// QE vendor ID.
    pub qe_vendor_id: [u8; 16],
    /// User data (QE identifier first).
    pub user_data: [u8; 20],
}

/// The 384-byte SGX enclave report body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SgxReportBody {
    /// CPU security version.
    pub cpu_svn: [u8; 16],
    /// MISCSELECT.
    pub misc_select: u32,
    /// ISV extended product id (KSS).
    pub isv_ext_prod_id: [u8; 16],
    /// ATTRIBUTES: FLAGS (8 bytes LE) followed by XFRM (8 bytes LE).
    pub attributes: [u8; 16],
    /// MRENCLAVE.
    pub mr_enclave: [u8; 32],
    /// MRSIGNER.
    pub mr_signer: [u8; 32],
    /// CONFIGID (KSS).
    pub config_id: [u8; 64],
    /// ISV product id.
    pub isv_prod_id: u16,
    /// ISV security version.
    pub isv_svn: u16,
    /// CONFIGSVN.
    pub config_svn: u16,
    /// ISV family id (KSS).
    pub isv_family_id: [u8; 16],
    /// REPORTDATA, chosen by the enclave.
    pub report_data: [u8; 64],
}

impl SgxReportBody {
    /// Parses a 384-byte report body.
    pub fn parse(bytes: &[u8]) -> Result<Self, QuoteError> {
        let mut r = Reader::new(bytes);
        let cpu_svn = r.array("CPUSVN")?;
        let misc_select = r.u32("MISCSELECT")?;
        r.take(12, "reserved1")?;
        let isv_ext_prod_id = r.array("ISVEXTPRODID")?;
        let attributes = r.array("ATTRIBUTES")?;
        let mr_enclave = r.array("MRENCLAVE")?;
        r.take(32, "reserved2")?;
        let mr_signer = r.array("MRSIGNER")?;
        r.take(32, "reserved3")?;
        let config_id = r.array("CONFIGID")?;
        let isv_prod_id = r.u16("ISVPRODID")?;
        let isv_svn = r.u16("ISVSVN")?;
        let config_svn = r.u16("CONFIGSVN")?;
        r.take(42, "reserved4")?;
        let isv_family_id = r.array("ISVFAMILYID")?;
        let report_data = r.array("REPORTDATA")?;
        Ok(Self {
            cpu_svn,
            misc_select,
            isv_ext_prod_id,
            attributes,
            mr_enclave,
            mr_signer,
            config_id,
            isv_prod_id,
            isv_svn,
            config_svn,
            isv_family_id,
            report_data,
        })
    }

    /// ATTRIBUTES.FLAGS as an integer.
    pub fn attribute_flags(&self) -> u64 {
        let mut f = [0u8; 8];
        f.copy_from_slice(&self.attributes[..8]);
        u64::from_le_bytes(f)
    }

    /// Whether the DEBUG attribute is set.
    pub fn is_debug(&self) -> bool {
        self.attribute_flags() & ATTR_DEBUG != 0
    }
}

/// A parsed SGX DCAP quote (header and enclave report body).
///
/// Parsing checks structure only; nothing here is verified. Use
/// [`crate::dcap::DcapVerifier`] for verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SgxQuote {
    /// The header.
    pub header: QuoteHeader,
    /// The enclave report body.
    pub body: SgxReportBody,
    /// Length of the signature data in bytes.
    pub signature_data_len: u32,
}

impl SgxQuote {
    /// Length of the quote without trailing zero padding, in bytes.
    pub fn len(&self) -> usize {
        HEADER_LEN + SGX_REPORT_BODY_LEN + 4 + self.signature_data_len as usize
    }

    /// Always false: a parsed quote is never empty.
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// Parses only the header, which is enough to tell SGX, TDX and EPID apart.
pub fn parse_header(quote: &[u8]) -> Result<QuoteHeader, QuoteError> {
    let mut r = Reader::new(quote);
    let version = r.u16("version")?;
    if version == 2 {
        return Err(QuoteError::Epid);
    }
    let att_key_type = r.u16("attestation key type")?;
    let tee_type = r.u32("tee type")?;
    let qe_svn = r.u16("QE SVN")?;
    let pce_svn = r.u16("PCE SVN")?;
    let qe_vendor_id = r.array("QE vendor ID")?;
    let user_data = r.array("user data")?;
    Ok(QuoteHeader {
        version,
        att_key_type,
        tee_type: if version == 3 { TEE_TYPE_SGX } else { tee_type },
        qe_svn,
        pce_svn,
        qe_vendor_id,
        user_data,
    })
}

impl SgxQuote {
    /// Parses an SGX DCAP quote, version 3 or the SGX form of version 4.
    ///
    /// TDX quotes, EPID quotes, foreign QE vendors and inconsistent lengths are
    /// rejected with a [`QuoteError`] that says which.
    pub fn parse(quote: &[u8]) -> Result<Self, QuoteError> {
        // Input may carry zero padding; the quote itself must fit MAX_QUOTE_LEN.
        if quote.len() > 16 * MAX_QUOTE_LEN {
            return Err(QuoteError::TooLarge(quote.len()));
        }
        let header = parse_header(quote)?;
        match header.version {
            3 => {}
            4 | 5 => match header.tee_type {
                TEE_TYPE_SGX => {}
                TEE_TYPE_TDX => {
                    return Err(QuoteError::Tdx { version: header.version, tee_type: header.tee_type });
                }
                other => {
                    return Err(QuoteError::UnknownTeeType { version: header.version, tee_type: other });
                }
            },
            v => return Err(QuoteError::UnsupportedVersion(v)),
        }
        if header.version == 5 {
            return Err(QuoteError::UnsupportedVersion(5));
        }
        if header.att_key_type != 2 {
            return Err(QuoteError::UnsupportedKeyType(header.att_key_type));
        }
        if header.qe_vendor_id != INTEL_QE_VENDOR_ID {
            return Err(QuoteError::WrongVendor(hex::encode(header.qe_vendor_id)));
        }
        let mut r = Reader::new(quote);
        r.take(HEADER_LEN, "header")?;
        let body = SgxReportBody::parse(r.take(SGX_REPORT_BODY_LEN, "report body")?)?;
        let signature_data_len = r.u32("signature_data_len")?;
        let declared = signature_data_len as usize;
        let rest = r.take(r.remaining(), "signature data")?;
        // Trailing zero padding (a quote read from a larger buffer) is tolerated;
        // anything else that does not match the declared length is not.
        let padded_ok = rest.get(declared..).is_some_and(|pad| pad.iter().all(|b| *b == 0));
        if !padded_ok {
            return Err(QuoteError::SignatureLength {
                declared: signature_data_len.into(),
                available: rest.len(),
            });
        }
        let q = Self { header, body, signature_data_len };
        if q.len() > MAX_QUOTE_LEN {
            return Err(QuoteError::TooLarge(q.len()));
        }
        Ok(q)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_inputs_never_panic() {
        for n in 0..500 {
            let buf = vec![3u8; n];
            assert!(SgxQuote::parse(&buf).is_err());
        }
    }

    #[test]
    fn zero_padding_tolerated_other_trailing_bytes_not() {
        let mut q = vec![0u8; HEADER_LEN + SGX_REPORT_BODY_LEN + 4 + 10];
        q[0] = 3;
        q[2] = 2;
        q[12..28].copy_from_slice(&INTEL_QE_VENDOR_ID);
        q[432] = 10;
        let parsed = SgxQuote::parse(&q).unwrap();
        assert_eq!(parsed.len(), q.len());
        q.extend_from_slice(&[0u8; 100]);
        assert_eq!(SgxQuote::parse(&q).unwrap().len(), q.len() - 100);
        q.push(1);
        assert!(matches!(SgxQuote::parse(&q), Err(QuoteError::SignatureLength { .. })));
        q[432] = 200;
        assert!(matches!(SgxQuote::parse(&q), Err(QuoteError::SignatureLength { declared: 200, .. })));
    }

    #[test]
    fn epid_is_named() {
        let mut q = vec![0u8; 1200];
        q[0] = 2;
        assert_eq!(SgxQuote::parse(&q), Err(QuoteError::Epid));
        assert!(QuoteError::Epid.to_string().contains("EPID"));
    }

    #[test]
    fn tdx_header_is_rejected() {
        let mut q = vec![0u8; 1200];
        q[0] = 4;
        q[2] = 2;
        q[4] = 0x81;
        assert!(matches!(SgxQuote::parse(&q), Err(QuoteError::Tdx { tee_type: 0x81, .. })));
    }
}
