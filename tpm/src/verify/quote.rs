//! The quote check: a TPM2_Quote made by the attested AK, over this challenge's nonce, of
//! exactly the PCRs the challenge asked for, whose pcrDigest the PCR values sent reproduce.
//!
//! Two steps, so the caller can spend the nonce in between (single use whatever the
//! outcome of the signature check): [`Quote::parse`] reads the TPMS_ATTEST and compares
//! its extraData with the challenge's nonce; [`Quote::verify`] checks the signature, the
//! selection and the digest and returns the PCR values the quote vouches for. Each failure
//! is one [`QuoteError`] variant naming the rule; nothing here does I/O.

use std::collections::HashMap;

use crate::verify::eventlog::HashAlg;
use crate::verify::tpm2::{
    pcr_digest, verify_signature, Attest, Attested, TpmError, TpmPublic, TpmSignature,
};

/// Quoted PCR values, by index, of the one bank quoted.
pub type QuotedPcrs = Vec<(u32, Vec<u8>)>;

/// Why a quote was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QuoteError {
    /// The TPMS_ATTEST does not parse.
    #[error("{0}")]
    MalformedAttest(#[source] TpmError),
    /// extraData is not this challenge's nonce. The caller may know better (a nonce it
    /// already spent: a replayed quote) and say so.
    #[error("the quote was made over another nonce than this challenge's")]
    Nonce {
        /// The extraData the quote carries.
        found: Vec<u8>,
    },
    /// The TPMT_SIGNATURE does not parse.
    #[error("{0}")]
    MalformedSignature(#[source] TpmError),
    /// The signature does not verify with the AK.
    #[error("not signed by the attested AK: {0}")]
    NotSignedByAk(#[source] TpmError),
    /// The attestation is of another type (a certify, ...).
    #[error("the attestation is not a TPM2_Quote")]
    NotAQuote,
    /// The bank asked for is not one a TPM can quote.
    #[error("bank {0} cannot be quoted")]
    BankNotQuotable(HashAlg),
    /// The quote selects other PCRs (or other banks) than the challenge asked for.
    #[error("the quote covers {bank} PCRs {quoted:?}, the challenge asked for {requested:?}")]
    Selection {
        /// The bank asked for.
        bank: HashAlg,
        /// The PCRs of that bank the quote selects.
        quoted: Vec<u32>,
        /// The PCRs asked for.
        requested: Vec<u32>,
    },
    /// No value was sent for a quoted PCR.
    #[error("no value sent for {bank} PCR {index}")]
    MissingPcrValue {
        /// The bank.
        bank: HashAlg,
        /// The PCR.
        index: u32,
    },
    /// The values sent are not the ones the TPM quoted.
    #[error("the PCR values sent do not match the quote's pcrDigest")]
    PcrDigest,
}

impl QuoteError {
    /// The rule that failed, in an operator's words: what a rejection is filed under.
    pub fn rule(&self) -> &'static str {
        match self {
            Self::MalformedAttest(_) | Self::NotAQuote => "quote",
            Self::BankNotQuotable(_) | Self::Selection { .. } | Self::PcrDigest => "quote",
            Self::Nonce { .. } => "quote nonce",
            Self::MalformedSignature(_) | Self::NotSignedByAk(_) => "quote signature",
            Self::MissingPcrValue { .. } => "PCR values",
        }
    }

    /// True when the evidence is malformed (does not parse, or is incomplete) rather than
    /// well formed and refused.
    pub fn is_malformed(&self) -> bool {
        matches!(
            self,
            Self::MalformedAttest(_) | Self::MalformedSignature(_) | Self::MissingPcrValue { .. }
        )
    }
}

/// The TPM algorithm of a bank ironroot quotes: the SHA families. SM3 banks are refused
/// (no ironroot agent quotes one, and no policy fixture exercises one), as are algorithms
/// this crate cannot compute.
fn quotable(bank: HashAlg) -> Option<HashAlg> {
    match bank {
        HashAlg::Sha1 | HashAlg::Sha256 | HashAlg::Sha384 | HashAlg::Sha512 => Some(bank),
        HashAlg::Sm3_256 | HashAlg::Unknown(_) => None,
    }
}

/// A quote whose extraData is this challenge's nonce; not yet verified.
#[derive(Debug)]
pub struct Quote<'a> {
    raw: &'a [u8],
    attest: Attest,
}

impl<'a> Quote<'a> {
    /// Parses the TPMS_ATTEST and checks its extraData is `nonce`.
    pub fn parse(attest: &'a [u8], nonce: &[u8]) -> Result<Self, QuoteError> {
        let parsed = Attest::parse(attest).map_err(QuoteError::MalformedAttest)?;
        if parsed.extra_data != nonce {
            return Err(QuoteError::Nonce {
                found: parsed.extra_data,
            });
        }
        Ok(Quote {
            raw: attest,
            attest: parsed,
        })
    }

    /// Checks the quote is signed by `ak`, selects exactly `pcrs` of `bank` (and nothing of
    /// another bank), and that `values` (index, digest of the PCRs of `bank` the agent
    /// sent; a later duplicate wins) reproduce its pcrDigest. Returns the quoted values, in
    /// the order of `pcrs`.
    pub fn verify(
        self,
        ak: &TpmPublic,
        signature: &[u8],
        bank: HashAlg,
        pcrs: &[u32],
        values: &[(u32, &[u8])],
    ) -> Result<QuotedPcrs, QuoteError> {
        let sig = TpmSignature::parse(signature).map_err(QuoteError::MalformedSignature)?;
        verify_signature(ak, self.raw, &sig).map_err(QuoteError::NotSignedByAk)?;
        let Attested::Quote {
            pcr_select,
            pcr_digest: digest,
        } = &self.attest.attested
        else {
            return Err(QuoteError::NotAQuote);
        };
        let want_hash = quotable(bank).ok_or(QuoteError::BankNotQuotable(bank))?;
        let selected: Vec<u32> = pcr_select
            .iter()
            .filter(|s| s.hash == want_hash)
            .flat_map(|s| s.pcrs.iter().copied())
            .collect();
        // A selection of another bank is refused too: the digest would cover PCRs the
        // challenge did not ask for, and the values sent could not reproduce it.
        if selected != pcrs
            || pcr_select
                .iter()
                .any(|s| s.hash != want_hash && !s.pcrs.is_empty())
        {
            return Err(QuoteError::Selection {
                bank,
                quoted: selected,
                requested: pcrs.to_vec(),
            });
        }
        let sent: HashMap<u32, &[u8]> = values.iter().copied().collect();
        let mut quoted = Vec::with_capacity(pcrs.len());
        for &index in pcrs {
            let v = sent
                .get(&index)
                .ok_or(QuoteError::MissingPcrValue { bank, index })?;
            quoted.push((index, v.to_vec()));
        }
        let refs: Vec<&[u8]> = quoted.iter().map(|(_, v)| v.as_slice()).collect();
        // The TPM hashes the PCR values with the signing scheme's hash, not the bank's.
        if &pcr_digest(sig.hash, &refs).map_err(QuoteError::MalformedSignature)? != digest {
            return Err(QuoteError::PcrDigest);
        }
        Ok(quoted)
    }
}
