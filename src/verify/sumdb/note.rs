//! Signed notes: the envelope around every tree head the checksum database
//! serves.
//!
//! Input: key strings (`name+hash+base64`) and note bytes. Output: a
//! [`Verifier`]/[`Signer`], a signed message, or an opened [`Note`] whose
//! verified signatures are known to be good.
//!
//! Go: x/mod/sumdb/note/note.go. The rules, in the order `open` checks them:
//! - the message is valid UTF-8 with no control characters but `\n`;
//! - the text ends at the last blank line, the signature block after it is
//!   non-empty and ends in `\n`;
//! - each signature line is `— <name> <base64(4-byte key hash || sig)>`, the
//!   name valid (non-empty, no space, no `+`), at most 100 lines;
//! - a line for an unknown key is kept as unverified (duplicates dropped), a
//!   known key's bad signature is an error, and at least one signature must
//!   verify.
//!
//! A key hash is the first 4 bytes of `sha256(name + "\n" + 0x01 || pubkey)`.

use std::fmt;

use base64::Engine as _;
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use super::GO_BASE64;

/// Go: note.go algEd25519, the only algorithm byte Go defines.
const ALG_ED25519: u8 = 1;
/// Go: note.go Open: more signature lines than this make a note malformed.
const MAX_SIGNATURES: usize = 100;
const SIG_PREFIX: &str = "— ";

/// Why a key, a note or a signature was refused. Messages are Go's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    /// Go uses this message for malformed signer keys too.
    #[error("malformed verifier id")]
    MalformedKey,
    #[error("unknown verifier algorithm")]
    UnknownAlgorithm,
    #[error("invalid verifier hash")]
    InvalidKeyHash,
    #[error("malformed note")]
    MalformedNote,
    #[error("invalid signer")]
    InvalidSigner,
    #[error("ambiguous key {name}+{hash:08x}")]
    AmbiguousKey { name: String, hash: u32 },
    #[error("invalid signature for key {name}+{hash:08x}")]
    InvalidSignature { name: String, hash: u32 },
    /// Go: note.go UnverifiedNoteError; the note is kept so a caller can
    /// say which keys did sign it.
    #[error("note has no verifiable signatures")]
    NoVerifiedSignatures { note: Box<Note> },
}

/// A public key that checks signatures: Go's `note.Verifier` for Ed25519.
/// Two verifiers are equal when name, hash and key bytes are.
#[derive(Clone, PartialEq, Eq)]
pub struct Verifier {
    name: String,
    hash: u32,
    /// The key's 32 bytes as given.
    raw: [u8; 32],
    /// `None` when the 32 bytes are not a curve point: Go accepts such a
    /// key and then fails every signature, so we do the same.
    key: Option<VerifyingKey>,
}

/// A private key that signs notes: Go's `note.Signer` for Ed25519.
#[derive(Clone)]
pub struct Signer {
    name: String,
    hash: u32,
    key: SigningKey,
}

/// An opened note. Go: note.go Note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// The signed text, ending in `\n`.
    pub text: String,
    /// Signatures by known keys that verified.
    pub sigs: Vec<Signature>,
    /// Signatures by keys the caller did not know.
    pub unverified_sigs: Vec<Signature>,
}

/// One signature line. Go: note.go Signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    pub name: String,
    pub hash: u32,
    /// The base64 of key hash and signature, as on the line.
    pub base64: String,
}

/// Go: note.go keyHash.
fn key_hash(name: &str, key: &[u8]) -> u32 {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update(key);
    let sum = h.finalize();
    u32::from_be_bytes([sum[0], sum[1], sum[2], sum[3]])
}

/// Go: note.go isValidName; Rust's `char::is_whitespace` is Unicode
/// White_Space, the set Go's `unicode.IsSpace` tests.
fn is_valid_name(name: &str) -> bool {
    !name.is_empty() && !name.contains(char::is_whitespace) && !name.contains('+')
}

/// Go: note.go chop.
fn chop<'a>(s: &'a str, sep: &str) -> (&'a str, &'a str) {
    s.split_once(sep).unwrap_or((s, ""))
}

/// Go: strconv.ParseUint(s, 16, 32) on exactly 8 characters, which takes
/// hex digits of either case and nothing else (no sign, no prefix).
fn parse_key_hash(hash16: &str) -> Option<u32> {
    if hash16.len() != 8 || !hash16.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(hash16, 16).ok()
}

impl Verifier {
    /// Go: note.go NewVerifier.
    pub fn parse(vkey: &str) -> Result<Verifier, NoteError> {
        let (name, rest) = chop(vkey, "+");
        let (hash16, key64) = chop(rest, "+");
        let hash = parse_key_hash(hash16);
        let key = GO_BASE64.decode(key64).ok();
        let (Some(hash), Some(key)) = (hash, key) else {
            return Err(NoteError::MalformedKey);
        };
        if !is_valid_name(name) || key.is_empty() {
            return Err(NoteError::MalformedKey);
        }
        // Go checks the hash before the algorithm byte.
        if hash != key_hash(name, &key) {
            return Err(NoteError::InvalidKeyHash);
        }
        if key[0] != ALG_ED25519 {
            return Err(NoteError::UnknownAlgorithm);
        }
        let raw: [u8; 32] = key[1..].try_into().map_err(|_| NoteError::MalformedKey)?;
        Ok(Verifier {
            name: name.to_owned(),
            hash,
            raw,
            key: VerifyingKey::from_bytes(&raw).ok(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The `name+hash+key` text [`Verifier::parse`] reads.
    pub fn vkey(&self) -> String {
        let mut key = vec![ALG_ED25519];
        key.extend_from_slice(&self.raw);
        format!("{}+{:08x}+{}", self.name, self.hash, GO_BASE64.encode(key))
    }

    pub fn key_hash(&self) -> u32 {
        self.hash
    }

    /// Go: x/crypto ed25519.Verify: cofactorless, canonical S required,
    /// small-order keys accepted; ed25519-dalek's plain (not strict)
    /// `verify` applies the same rules.
    fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        let (Some(key), Ok(sig)) = (&self.key, ed25519_dalek::Signature::from_slice(sig)) else {
            return false;
        };
        ed25519_dalek::Verifier::verify(key, msg, &sig).is_ok()
    }
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Verifier({}+{:08x})", self.name, self.hash)
    }
}

impl Signer {
    /// Go: note.go NewSigner.
    pub fn parse(skey: &str) -> Result<Signer, NoteError> {
        let (priv1, rest) = chop(skey, "+");
        let (priv2, rest) = chop(rest, "+");
        let (name, rest) = chop(rest, "+");
        let (hash16, key64) = chop(rest, "+");
        let hash = parse_key_hash(hash16);
        let key = GO_BASE64.decode(key64).ok();
        let (Some(hash), Some(key)) = (hash, key) else {
            return Err(NoteError::MalformedKey);
        };
        if priv1 != "PRIVATE" || priv2 != "KEY" || !is_valid_name(name) || key.is_empty() {
            return Err(NoteError::MalformedKey);
        }
        if key[0] != ALG_ED25519 {
            return Err(NoteError::UnknownAlgorithm);
        }
        let seed: [u8; 32] = key[1..].try_into().map_err(|_| NoteError::MalformedKey)?;
        let key = SigningKey::from_bytes(&seed);
        if hash != key_hash(name, &public_key_bytes(&key.verifying_key())) {
            return Err(NoteError::InvalidKeyHash);
        }
        Ok(Signer {
            name: name.to_owned(),
            hash,
            key,
        })
    }

    /// Go: note.go GenerateKey: a fresh key pair, as the signer, its
    /// `PRIVATE+KEY+…` string and its `name+hash+key` verifier string.
    pub fn generate(name: &str) -> Result<(Signer, String, String), NoteError> {
        if !is_valid_name(name) {
            return Err(NoteError::InvalidSigner);
        }
        let seed: [u8; 32] = rand::random();
        let key = SigningKey::from_bytes(&seed);
        let pubkey = public_key_bytes(&key.verifying_key());
        let hash = key_hash(name, &pubkey);
        let mut private = vec![ALG_ED25519];
        private.extend_from_slice(&seed);
        let skey = format!(
            "PRIVATE+KEY+{name}+{hash:08x}+{}",
            GO_BASE64.encode(private)
        );
        let vkey = format!("{name}+{hash:08x}+{}", GO_BASE64.encode(pubkey));
        let signer = Signer {
            name: name.to_owned(),
            hash,
            key,
        };
        Ok((signer, skey, vkey))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn key_hash(&self) -> u32 {
        self.hash
    }

    pub fn verifier(&self) -> Verifier {
        Verifier {
            name: self.name.clone(),
            hash: self.hash,
            raw: self.key.verifying_key().to_bytes(),
            key: Some(self.key.verifying_key()),
        }
    }

    /// The `name+hash+key` verifier string (Go: note.go NewEd25519VerifierKey).
    pub fn vkey(&self) -> String {
        let pubkey = public_key_bytes(&self.key.verifying_key());
        format!(
            "{}+{:08x}+{}",
            self.name,
            self.hash,
            GO_BASE64.encode(pubkey)
        )
    }
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signer({}+{:08x})", self.name, self.hash)
    }
}

fn public_key_bytes(key: &VerifyingKey) -> Vec<u8> {
    let mut out = vec![ALG_ED25519];
    out.extend_from_slice(key.as_bytes());
    out
}

/// Go: note.go Sign with a note that has no signatures yet.
pub fn sign(text: &str, signers: &[&Signer]) -> Result<Vec<u8>, NoteError> {
    let note = Note {
        text: text.to_owned(),
        sigs: Vec::new(),
        unverified_sigs: Vec::new(),
    };
    sign_note(&note, signers)
}

/// Go: note.go Sign: the note's text, a blank line, the note's existing
/// signatures (except those the signers replace), then the new ones.
pub fn sign_note(note: &Note, signers: &[&Signer]) -> Result<Vec<u8>, NoteError> {
    if !note.text.ends_with('\n') {
        return Err(NoteError::MalformedNote);
    }
    let mut new_sigs = String::new();
    for s in signers {
        if !is_valid_name(&s.name) {
            return Err(NoteError::InvalidSigner);
        }
        let sig = s.key.sign(note.text.as_bytes());
        let mut raw = s.hash.to_be_bytes().to_vec();
        raw.extend_from_slice(&sig.to_bytes());
        new_sigs.push_str(&signature_line(&s.name, &GO_BASE64.encode(raw)));
    }
    let mut out = note.text.clone();
    out.push('\n');
    for sig in note.sigs.iter().chain(&note.unverified_sigs) {
        if !is_valid_name(&sig.name) {
            return Err(NoteError::MalformedNote);
        }
        if signers
            .iter()
            .any(|s| s.name == sig.name && s.hash == sig.hash)
        {
            continue;
        }
        let raw = GO_BASE64.decode(&sig.base64).unwrap_or_default();
        if raw.len() < 4 || u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]) != sig.hash {
            return Err(NoteError::MalformedNote);
        }
        out.push_str(&signature_line(&sig.name, &sig.base64));
    }
    out.push_str(&new_sigs);
    Ok(out.into_bytes())
}

fn signature_line(name: &str, base64: &str) -> String {
    format!("{SIG_PREFIX}{name} {base64}\n")
}

/// Go: note.go Open, with `known` as Go's `VerifierList(known...)`.
pub fn open(msg: &[u8], known: &[&Verifier]) -> Result<Note, NoteError> {
    let msg = std::str::from_utf8(msg).map_err(|_| NoteError::MalformedNote)?;
    if msg.chars().any(|c| c < '\u{20}' && c != '\n') {
        return Err(NoteError::MalformedNote);
    }
    let split = msg.rfind("\n\n").ok_or(NoteError::MalformedNote)?;
    let (text, sigs) = (&msg[..split + 1], &msg[split + 2..]);
    if !sigs.ends_with('\n') {
        return Err(NoteError::MalformedNote);
    }
    let mut note = Note {
        text: text.to_owned(),
        sigs: Vec::new(),
        unverified_sigs: Vec::new(),
    };
    // `sigs` ends in '\n', so the last piece of the split is empty.
    let lines: Vec<&str> = sigs.split('\n').collect();
    for (count, line) in lines[..lines.len() - 1].iter().enumerate() {
        let sig = parse_signature_line(line)?;
        if count + 1 > MAX_SIGNATURES {
            return Err(NoteError::MalformedNote);
        }
        check_signature(&mut note, known, sig)?;
    }
    if note.sigs.is_empty() {
        return Err(NoteError::NoVerifiedSignatures {
            note: Box::new(note),
        });
    }
    Ok(note)
}

/// A parsed signature line: the signature and the raw signature bytes.
struct ParsedSig {
    sig: Signature,
    raw: Vec<u8>,
}

/// Go: note.go Open: `— <name> <base64>`, the decoded bytes at least a key
/// hash and one more byte.
fn parse_signature_line(line: &str) -> Result<ParsedSig, NoteError> {
    let rest = line
        .strip_prefix(SIG_PREFIX)
        .ok_or(NoteError::MalformedNote)?;
    let (name, b64) = chop(rest, " ");
    let raw = GO_BASE64
        .decode(b64)
        .map_err(|_| NoteError::MalformedNote)?;
    if !is_valid_name(name) || b64.is_empty() || raw.len() < 5 {
        return Err(NoteError::MalformedNote);
    }
    let hash = u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]);
    Ok(ParsedSig {
        sig: Signature {
            name: name.to_owned(),
            hash,
            base64: b64.to_owned(),
        },
        raw: raw[4..].to_vec(),
    })
}

/// Go: note.go Open, one signature: unknown keys are kept once per line,
/// known keys are checked once per key.
fn check_signature(
    note: &mut Note,
    known: &[&Verifier],
    parsed: ParsedSig,
) -> Result<(), NoteError> {
    let ParsedSig { sig, raw } = parsed;
    let mut matching = known
        .iter()
        .filter(|v| v.name == sig.name && v.hash == sig.hash);
    let Some(verifier) = matching.next() else {
        // Go dedupes by line; a name holds no space, so name and base64
        // together are the line.
        let seen = note
            .unverified_sigs
            .iter()
            .any(|s| s.name == sig.name && s.base64 == sig.base64);
        if !seen {
            note.unverified_sigs.push(sig);
        }
        return Ok(());
    };
    if matching.next().is_some() {
        return Err(NoteError::AmbiguousKey {
            name: sig.name,
            hash: sig.hash,
        });
    }
    if note
        .sigs
        .iter()
        .any(|s| s.name == sig.name && s.hash == sig.hash)
    {
        return Ok(());
    }
    if !verifier.verify(note.text.as_bytes(), &raw) {
        return Err(NoteError::InvalidSignature {
            name: sig.name,
            hash: sig.hash,
        });
    }
    note.sigs.push(sig);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    // Go: x/mod/sumdb/note/note_test.go (TestNewVerifier, TestNewSigner, TestSign).
    const PETER_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    const PETER_SKEY: &str =
        "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
    const TEXT: &str = "If you think cryptography is the answer to your problem,\n\
                        then you don't know what your problem is.\n";
    const PETER_SIG: &str = "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";

    fn peter() -> (Signer, Verifier) {
        (
            Signer::parse(PETER_SKEY).expect("skey parses"),
            Verifier::parse(PETER_VKEY).expect("vkey parses"),
        )
    }

    #[test]
    fn verifier_parses_known_keys() {
        let v = Verifier::parse(PETER_VKEY).unwrap();
        assert_eq!((v.name(), v.key_hash()), ("PeterNeumann", 0xc74f20a3));
        assert_eq!(
            v.vkey(),
            PETER_VKEY,
            "renders back to the text it came from"
        );
        // Go: cmd/go/internal/modfetch/key.go, PROTOCOL.md.
        let v =
            Verifier::parse("sum.golang.org+033de0ae+Ac4zctda0e5eza+HJyk9SxEdh+s3Ux18htTTAD8OuAn8")
                .unwrap();
        assert_eq!((v.name(), v.key_hash()), ("sum.golang.org", 0x033de0ae));
    }

    #[test]
    fn verifier_rejects_every_mangling() {
        // Go: note_test.go TestNewVerifier: every proper substring and every
        // one-byte change of the key is refused.
        let b = PETER_VKEY.as_bytes();
        for i in 0..=b.len() {
            for j in i + 1..=b.len() {
                if (i, j) != (0, b.len()) {
                    let k = String::from_utf8_lossy(&b[i..j]);
                    assert!(Verifier::parse(&k).is_err(), "accepted {k:?}");
                }
            }
        }
        for i in 0..b.len() {
            let mut m = b.to_vec();
            m[i] += 1;
            let k = String::from_utf8_lossy(&m);
            assert!(Verifier::parse(&k).is_err(), "accepted {k:?}");
        }
    }

    #[test]
    fn verifier_errors() {
        let cases: &[(&str, NoteError)] = &[
            // Go: note_test.go: wrong key length and unknown algorithm, each
            // with a key hash adjusted to match.
            (
                "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==",
                NoteError::MalformedKey,
            ),
            (
                "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
                NoteError::UnknownAlgorithm,
            ),
            (
                "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
                NoteError::InvalidKeyHash,
            ),
            // ParseUint takes no sign.
            (
                "PeterNeumann++74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
                NoteError::MalformedKey,
            ),
            ("Peter Neumann+c74f20a3+AQ==", NoteError::MalformedKey),
            ("+c74f20a3+AQ==", NoteError::MalformedKey),
        ];
        for (vkey, want) in cases {
            assert_eq!(Verifier::parse(vkey).unwrap_err(), *want, "{vkey}");
        }
        // Upper-case hex is a valid spelling of the hash itself.
        let upper = PETER_VKEY.replace("c74f20a3", "C74F20A3");
        assert_eq!(Verifier::parse(&upper).unwrap().key_hash(), 0xc74f20a3);
    }

    #[test]
    fn signer_parses_and_matches_verifier() {
        let (s, v) = peter();
        assert_eq!((s.name(), s.key_hash()), (v.name(), v.key_hash()));
        assert_eq!(s.vkey(), PETER_VKEY);
        let cases: &[(&str, NoteError)] = &[
            (
                "PRIVATE+KEY+PeterNeumann+c74f20a4+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz",
                NoteError::InvalidKeyHash,
            ),
            (
                "PRIVATE+KEZ+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz",
                NoteError::MalformedKey,
            ),
            (
                "PRIVATE+KEY+PeterNeumann+c74f20a3+AoEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz",
                NoteError::UnknownAlgorithm,
            ),
            (PETER_VKEY, NoteError::MalformedKey),
        ];
        for (skey, want) in cases {
            assert_eq!(Signer::parse(skey).unwrap_err(), *want, "{skey}");
        }
    }

    #[test]
    fn sign_matches_go() {
        // Go: note_test.go TestSign; ed25519 signatures are deterministic.
        let (s, _) = peter();
        let msg = sign(TEXT, &[&s]).unwrap();
        assert_eq!(
            String::from_utf8(msg).unwrap(),
            format!("{TEXT}\n{PETER_SIG}")
        );
        assert_eq!(sign("no newline", &[&s]), Err(NoteError::MalformedNote));
    }

    #[test]
    fn generated_keys_round_trip() {
        let (signer, skey, vkey) = Signer::generate("sum.test.example").unwrap();
        let parsed = Signer::parse(&skey).unwrap();
        let v = Verifier::parse(&vkey).unwrap();
        assert_eq!(parsed.vkey(), vkey);
        assert_eq!(signer.vkey(), vkey);
        assert_eq!(v.key_hash(), signer.key_hash());
        let msg = sign("hello\n", &[&parsed]).unwrap();
        let n = open(&msg, &[&v]).unwrap();
        assert_eq!(n.text, "hello\n");
        assert_eq!(n.sigs[0].name, "sum.test.example");
        assert!(Signer::generate("bad name").is_err());
        assert!(Signer::generate("a+b").is_err());
    }

    #[test]
    fn open_verifies_and_keeps_unknown_signatures() {
        let (_, peter_v) = peter();
        let (other, _, _) = Signer::generate("Other").unwrap();
        let msg = format!("{TEXT}\n{PETER_SIG}");
        let n = open(msg.as_bytes(), &[&peter_v]).unwrap();
        assert_eq!(n.text, TEXT);
        assert_eq!(n.sigs.len(), 1);
        assert_eq!(
            (n.sigs[0].name.as_str(), n.sigs[0].hash),
            ("PeterNeumann", 0xc74f20a3)
        );
        assert!(n.unverified_sigs.is_empty());

        // Known by nobody: no verified signature, but the note is reported.
        match open(msg.as_bytes(), &[]) {
            Err(NoteError::NoVerifiedSignatures { note }) => {
                assert_eq!(note.unverified_sigs.len(), 1);
                assert_eq!(note.text, TEXT);
            }
            other => panic!("want NoVerifiedSignatures, got {other:?}"),
        }

        // Two signers; each verifier sees the other's signature as unknown.
        let (peter_s, _) = peter();
        let both = sign(TEXT, &[&peter_s, &other]).unwrap();
        let n = open(&both, &[&peter_v]).unwrap();
        assert_eq!((n.sigs.len(), n.unverified_sigs.len()), (1, 1));
        assert_eq!(n.unverified_sigs[0].name, "Other");
        let n = open(&both, &[&peter_v, &other.verifier()]).unwrap();
        assert_eq!((n.sigs.len(), n.unverified_sigs.len()), (2, 0));

        // Re-signing keeps the other signatures.
        let resigned = sign_note(&n, &[&peter_s]).unwrap();
        let n2 = open(&resigned, &[&peter_v, &other.verifier()]).unwrap();
        assert_eq!(n2.sigs.len(), 2);

        // The same line twice counts once.
        let dup = format!("{TEXT}\n{PETER_SIG}{PETER_SIG}");
        assert_eq!(open(dup.as_bytes(), &[&peter_v]).unwrap().sigs.len(), 1);
        assert_eq!(
            open(dup.as_bytes(), &[]).unwrap_err(),
            NoteError::NoVerifiedSignatures {
                note: Box::new(Note {
                    text: TEXT.to_owned(),
                    sigs: vec![],
                    unverified_sigs: vec![n.sigs[0].clone()],
                })
            }
        );
        // Ambiguous: the same key twice in the known list.
        assert_eq!(
            open(msg.as_bytes(), &[&peter_v, &peter_v]).unwrap_err(),
            NoteError::AmbiguousKey {
                name: "PeterNeumann".into(),
                hash: 0xc74f20a3
            }
        );
    }

    #[test]
    fn open_rejects() {
        let (_, v) = peter();
        let bad_sig = PETER_SIG.replace("ZJkuBS9UG", "ZJkuBS9UH");
        let tampered = TEXT.replace("answer", "ANSWER");
        let too_many: String = (0..101).map(|i| format!("— k{i} AAAAAAAA\n")).collect();
        let cases: Vec<(String, NoteError)> = vec![
            (format!("{tampered}\n{PETER_SIG}"), invalid_sig()),
            (format!("{TEXT}\n{bad_sig}"), invalid_sig()),
            (TEXT.to_owned(), NoteError::MalformedNote),
            (format!("{TEXT}\n"), NoteError::MalformedNote),
            (
                format!("{TEXT}\n{}", PETER_SIG.trim_end()),
                NoteError::MalformedNote,
            ),
            (
                format!("{TEXT}\n- PeterNeumann x08go\n"),
                NoteError::MalformedNote,
            ),
            (
                format!("{TEXT}\n— PeterNeumann\n"),
                NoteError::MalformedNote,
            ),
            (
                format!("{TEXT}\n— PeterNeumann AAAA\n"),
                NoteError::MalformedNote,
            ),
            (
                format!("{TEXT}\n— PeterNeumann !!!!\n"),
                NoteError::MalformedNote,
            ),
            (
                format!("{TEXT}\n— Peter+Neumann AAAAAAAA\n"),
                NoteError::MalformedNote,
            ),
            (format!("a\tb\n\n{PETER_SIG}"), NoteError::MalformedNote),
            (format!("a\rb\n\n{PETER_SIG}"), NoteError::MalformedNote),
            (format!("{TEXT}\n{too_many}"), NoteError::MalformedNote),
        ];
        for (msg, want) in cases {
            assert_eq!(open(msg.as_bytes(), &[&v]).unwrap_err(), want, "{msg:?}");
        }
        let mut invalid_utf8 = format!("{TEXT}\n{PETER_SIG}").into_bytes();
        invalid_utf8[3] = 0xff;
        assert_eq!(
            open(&invalid_utf8, &[&v]).unwrap_err(),
            NoteError::MalformedNote
        );
        // 100 unknown signatures are fine (and are then unverified).
        let hundred: String = (0..100).map(|i| format!("— k{i} AAAAAAAA\n")).collect();
        let msg = format!("{TEXT}\n{hundred}");
        match open(msg.as_bytes(), &[&v]) {
            Err(NoteError::NoVerifiedSignatures { note }) => {
                assert_eq!(note.unverified_sigs.len(), 100)
            }
            other => panic!("{other:?}"),
        }
    }

    fn invalid_sig() -> NoteError {
        NoteError::InvalidSignature {
            name: "PeterNeumann".into(),
            hash: 0xc74f20a3,
        }
    }

    #[test]
    fn messages_are_gos() {
        assert_eq!(
            invalid_sig().to_string(),
            "invalid signature for key PeterNeumann+c74f20a3"
        );
        assert_eq!(NoteError::MalformedNote.to_string(), "malformed note");
    }
}
