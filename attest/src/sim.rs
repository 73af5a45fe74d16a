//! SIMULATED, INSECURE evidence for machines without SGX (feature `insecure-sim`).
//!
//! The simulated report is a CBOR map, carried inside the TCG DICE evidence
//! extension under the project-private tag [`crate::ratls::SIM_EVIDENCE_TAG`]
//! (never tag 60000, never the legacy Gramine OID):
//!
//! ```text
//! { "tee": "simulated-INSECURE", "mrenclave": bstr(32), "mrsigner": bstr(32),
//!   "isv_prod_id": uint, "isv_svn": uint, "attributes": bstr(16), "report_data": bstr(64) }
//! ```
//!
//! Nothing signs it: anyone can produce one. A key server accepts it only
//! when this feature is compiled in, the policy says
//! `insecure_allow_simulated = true`, and the matching policy entry says
//! `tee = "simulated"`. Its TCB status is always [`TcbStatus::Simulated`] and
//! its debug flag is always set; no code path treats it as SGX.

use ciborium::value::Value;
use rustls_pki_types::UnixTime;

use crate::attester::{AttestError, Attester, EvidenceKind};
use crate::dcap::VerifyError;
use crate::evidence::{EnclaveIdentity, TcbStatus, TeeType, VerifiedEvidence};
use crate::ratls::SimulatedEvidenceVerifier;

/// The value of the `"tee"` key in a simulated report.
pub const SIM_TEE_NAME: &str = "simulated-INSECURE";

/// Produces simulated reports claiming a fixed identity. INSECURE.
#[derive(Debug, Clone)]
pub struct SimAttester {
    identity: EnclaveIdentity,
}

impl SimAttester {
    /// An attester that claims `identity`. Anyone can claim anything: INSECURE.
    pub fn dangerous_new(identity: EnclaveIdentity) -> Self {
        Self { identity }
    }
}

/// Encodes a simulated report.
pub fn encode_report(id: &EnclaveIdentity, report_data: &[u8; 64]) -> Vec<u8> {
    let map = Value::Map(vec![
        (Value::Text("tee".into()), Value::Text(SIM_TEE_NAME.into())),
        (Value::Text("mrenclave".into()), Value::Bytes(id.mrenclave.to_vec())),
        (Value::Text("mrsigner".into()), Value::Bytes(id.mrsigner.to_vec())),
        (Value::Text("isv_prod_id".into()), Value::Integer(id.isv_prod_id.into())),
        (Value::Text("isv_svn".into()), Value::Integer(id.isv_svn.into())),
        (Value::Text("attributes".into()), Value::Bytes(id.attributes.to_vec())),
        (Value::Text("report_data".into()), Value::Bytes(report_data.to_vec())),
    ]);
    let mut out = Vec::new();
    // Writing a Value into a Vec cannot fail.
    let _ = ciborium::ser::into_writer(&map, &mut out);
    out
}

/// A SIMULATED quote, as `pfs run` serves it at `/dev/attestation/quote`: the report of
/// [`encode_report`] inside the same envelope as simulated RA-TLS evidence, the CBOR tag
/// [`crate::ratls::SIM_EVIDENCE_TAG`] over `[bstr(report), bstr(claims)]`, with an empty
/// claims map (the report data is the program's own, not a key hash).
///
/// The tag is what keeps it apart from Intel quotes: an SGX verifier expects a version 3
/// quote (or tag 60000) and rejects it. Read it back with
/// [`crate::ratls::parse_tagged_evidence`] and [`SimVerifier`].
pub fn encode_quote(id: &EnclaveIdentity, report_data: &[u8; 64]) -> Vec<u8> {
    let mut no_claims = Vec::new();
    // Writing a Value into a Vec cannot fail.
    let _ = ciborium::ser::into_writer(&Value::Map(Vec::new()), &mut no_claims);
    let quote = Value::Tag(
        crate::ratls::SIM_EVIDENCE_TAG,
        Box::new(Value::Array(vec![Value::Bytes(encode_report(id, report_data)), Value::Bytes(no_claims)])),
    );
    let mut out = Vec::new();
    let _ = ciborium::ser::into_writer(&quote, &mut out);
    out
}

impl Attester for SimAttester {
    fn kind(&self) -> EvidenceKind {
        EvidenceKind::Simulated
    }
    fn attest(&self, report_data: &[u8; 64]) -> Result<Vec<u8>, AttestError> {
        Ok(encode_report(&self.identity, report_data))
    }
}

/// Accepts simulated reports. Constructed only through [`SimVerifier::dangerous_new`].
#[derive(Debug, Clone)]
pub struct SimVerifier(());

impl SimVerifier {
    /// A verifier that accepts simulated, unsigned evidence. INSECURE.
    pub fn dangerous_new() -> Self {
        Self(())
    }
}

fn bad(msg: impl Into<String>) -> VerifyError {
    VerifyError::Simulated(msg.into())
}

fn get<'a>(m: &'a [(Value, Value)], k: &str) -> Result<&'a Value, VerifyError> {
    m.iter()
        .find_map(|(key, v)| (key.as_text() == Some(k)).then_some(v))
        .ok_or_else(|| bad(format!("simulated report lacks {k:?}")))
}

fn bytes<const N: usize>(m: &[(Value, Value)], k: &str) -> Result<[u8; N], VerifyError> {
    let v = get(m, k)?.as_bytes().ok_or_else(|| bad(format!("{k:?} is not a byte string")))?;
    <[u8; N]>::try_from(v.as_slice()).map_err(|_| bad(format!("{k:?} has {} bytes, expected {N}", v.len())))
}

fn uint16(m: &[(Value, Value)], k: &str) -> Result<u16, VerifyError> {
    let v = get(m, k)?.as_integer().ok_or_else(|| bad(format!("{k:?} is not an integer")))?;
    u16::try_from(v).map_err(|_| bad(format!("{k:?} is out of range for u16")))
}

impl SimulatedEvidenceVerifier for SimVerifier {
    fn verify_simulated(&self, report: &[u8], now: UnixTime) -> Result<VerifiedEvidence, VerifyError> {
        let v: Value = ciborium::de::from_reader(report).map_err(|e| bad(format!("not CBOR: {e}")))?;
        let m = v.as_map().ok_or_else(|| bad("simulated report is not a CBOR map"))?;
        if get(m, "tee")?.as_text() != Some(SIM_TEE_NAME) {
            return Err(bad(format!("\"tee\" is not {SIM_TEE_NAME:?}")));
        }
        let identity = EnclaveIdentity {
            mrenclave: bytes(m, "mrenclave")?,
            mrsigner: bytes(m, "mrsigner")?,
            isv_prod_id: uint16(m, "isv_prod_id")?,
            isv_svn: uint16(m, "isv_svn")?,
            attributes: bytes(m, "attributes")?,
            debug: true,
        };
        let report_data = bytes(m, "report_data")?;
        Ok(VerifiedEvidence::assertion(
            TeeType::Simulated,
            identity,
            report_data,
            TcbStatus::Simulated,
            Vec::new(),
            now,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ratls::{CertEvidence, parse_tagged_evidence};

    #[test]
    fn quote_carries_the_report_data_under_the_simulated_tag() {
        let id = EnclaveIdentity {
            mrenclave: [7; 32],
            mrsigner: [0; 32],
            isv_prod_id: 3,
            isv_svn: 4,
            attributes: [0; 16],
            debug: false,
        };
        let mut rd = [0u8; 64];
        rd[..5].copy_from_slice(b"hello");
        let quote = encode_quote(&id, &rd);
        let CertEvidence::Simulated { report, .. } = parse_tagged_evidence(&quote).unwrap() else {
            panic!("not simulated evidence")
        };
        let ev = SimVerifier::dangerous_new()
            .verify_simulated(&report, UnixTime::since_unix_epoch(Default::default()))
            .unwrap();
        assert_eq!(ev.report_data(), &rd);
        assert_eq!(ev.identity().mrenclave, [7; 32]);
        assert_eq!(ev.tee(), TeeType::Simulated);
        // Not an SGX quote: a DCAP parser refuses it.
        assert!(crate::quote::SgxQuote::parse(&quote).is_err());
    }
}
