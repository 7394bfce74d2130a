//! Evidence captured from swtpm 0.7.1 with tpm2-tools 5.4 (see the doc of each item), so
//! the unit tests check against what a real TPM computed, also where no swtpm runs.
//! Names were printed by the TPM (`tpm2_readpublic -n`), not computed here. Also the
//! builders and loops the unit tests share.

use super::{
    EccCurve, KeyScheme, ObjectAttributes, PublicKey, PublicParts, SymmetricDef, TpmPublic,
};
use crate::verify::eventlog::HashAlg;

/// TPM2B_PUBLIC of the RSA-2048 EK (standard template L-1), `tpm2_createek -G rsa -u`.
pub(crate) const EK_RSA_PUB: &str = concat!(
    "013a0001000b000300b20020837197674484b3f81a90cc8d46a5d724fd52d76e06520b64f2a1da1b331469aa00060080",
    "0043001008000000000001009c6cea9809635b443836088f3e8073801697e6b366bba7eda74db4165e3d515679156e8c",
    "71a58af178a628ab1c778279bc84ffd491415b11000445bb45ef8b6e423f93e94d63ae4e13f408ed2332d6c58ff38ad4",
    "4d10a5bc61b3e6b9aff1b73a526aa00231512565b288e315e108f55b3949896ef092c45e3ffb92d7544746bc095d7334",
    "bc190f69dc15ec465b28c470a983786bf35a3bc9cd4ebd039c9c2488e6fcdf0fae73a772bc6d5d7eb77287a333284681",
    "a0ace57ea71a81945beec96a3e6bc919b1494cddda37435561efc388f9d97ec2615ccc36ea7e807888017062ca244420",
    "1db4f5ff2e59c79fbe4f5c51cdac1d4b616a3b9520f6003661a15583",
);

/// Its Name, from the TPM.
pub(crate) const EK_RSA_NAME: &str =
    "000be5b63d50e0ea6bd88b15942c9128a748db68353f8ae1a32161a6f0c02c3d5ae5";

/// SubjectPublicKeyInfo of the EK certificate in NV 0x01c00002 (swtpm_localca).
pub(crate) const EK_RSA_SPKI: &str = concat!(
    "30820122300d06092a864886f70d01010105000382010f003082010a02820101009c6cea9809635b443836088f3e8073",
    "801697e6b366bba7eda74db4165e3d515679156e8c71a58af178a628ab1c778279bc84ffd491415b11000445bb45ef8b",
    "6e423f93e94d63ae4e13f408ed2332d6c58ff38ad44d10a5bc61b3e6b9aff1b73a526aa00231512565b288e315e108f5",
    "5b3949896ef092c45e3ffb92d7544746bc095d7334bc190f69dc15ec465b28c470a983786bf35a3bc9cd4ebd039c9c24",
    "88e6fcdf0fae73a772bc6d5d7eb77287a333284681a0ace57ea71a81945beec96a3e6bc919b1494cddda37435561efc3",
    "88f9d97ec2615ccc36ea7e807888017062ca2444201db4f5ff2e59c79fbe4f5c51cdac1d4b616a3b9520f6003661a155",
    "830203010001",
);

/// TPM2B_PUBLIC of the ECC P-384 EK (template H-3, as swtpm_setup persists at 0x81010016).
pub(crate) const EK_P384_PUB: &str = concat!(
    "00aa0023000c000300f20030b26e7d28d11a50bc53d882bcf5fd3a1a074148bb35d3b4e4cb1c0ad9bde419cacb47ba09",
    "699646150f9fc000f3f80e1200060100004300100004001000309cf2cfe8e33e9ef016911f4d6ae2a4b7e31119aa1778",
    "759fbad44712f6cf79b4f6c65103be15f3e018c5c30193520d4b00300486a0d7e7e48655ba79fd240dcf77436f7184e7",
    "850a909603748a52463401d7363a62d2aac43c8b7ad2842d4166bae8",
);

/// Its Name, from the TPM.
pub(crate) const EK_P384_NAME: &str = concat!(
    "000c4a9de4f8353aaa2689b46058282d8cd4e6ee685a13d56d567d4412c8c089b32638472ae21184dc6d66b482505239",
    "cf9a",
);

/// SubjectPublicKeyInfo of the EK certificate in NV 0x01c00016.
pub(crate) const EK_P384_SPKI: &str = concat!(
    "3076301006072a8648ce3d020106052b81040022036200049cf2cfe8e33e9ef016911f4d6ae2a4b7e31119aa1778759f",
    "bad44712f6cf79b4f6c65103be15f3e018c5c30193520d4b0486a0d7e7e48655ba79fd240dcf77436f7184e7850a9096",
    "03748a52463401d7363a62d2aac43c8b7ad2842d4166bae8",
);

/// TPM2B_PUBLIC of an RSA AK, `tpm2_createak -G rsa -g sha256 -s rsassa`.
pub(crate) const AK_RSA_PUB: &str = concat!(
    "01180001000b00050072000000100014000b0800000000000100981abf436fe700646ac705df8b9330ab974402708d98",
    "90f710c05a4cb04829e805f6b6671eee46e3cfc1c2a0cb5fc18cd392fde4bc6ca7d2d848e749dd090590c972b6550d6b",
    "a8c8373203103e40c9fb7b63d70a3385388b2021d047687abcbf1a9ad4fe5bdc1c535ecc12a61841883ae2218284c5aa",
    "7a61dc367a9181525f9387060e7535c991e6782109d046bb04613e14a061eb1fec3a3ae2bf712d0315fa2064ea8cd626",
    "89387a521158056ef3bb701170d384de4c497a21292b8d29e3190198806f4f793d2bc3bf329a9db0cd06ee45f9df8396",
    "8a6b6c950c24ab5dcfb92386780e562fbae79044961c3a8eed2884c9391e8bc72ad3914f0aab0268af1f",
);

/// Its Name, from the TPM.
pub(crate) const AK_RSA_NAME: &str =
    "000bbc36992736b010619e30750ea91ad0f0a4d10694be1eca742b02711486899de8";

/// TPMS_ATTEST of `tpm2_quote -c ak -l sha256:0,1,2,3 -q 0011223344556677 -g sha256`.
pub(crate) const QUOTE_RSA_MSG: &str = concat!(
    "ff54434780180022000bd2de4564121ff25b88e09c9b0429f33e8ac8fedab5a358b6a9154aa778396a8b000800112233",
    "445566770000000000004219000000020000000001201910230016363600000001000b030f0000002038723a2e5e8a17",
    "aa7950dc008209944e898f69a7bd10a23c839d341e935fd5ca",
);

/// Its TPMT_SIGNATURE (RSASSA/SHA-256).
pub(crate) const QUOTE_RSA_SIG: &str = concat!(
    "0014000b0100234487f42422ba1ff6685a758098663decd3ec64a51c900f6c9ee7e252b6ff202dae10ca6b63c901f8f1",
    "46a1560a035b99418d325b8519a8c218f15fec069067141e2b0d6ec2803a46983612130dfcb2aa9f3cf3b6f4e7c5ad09",
    "91b80c4a03d1b70b97160790e16d87dcff0f20eedd445aa261221e5123b1b24afa227ad34fdf0f6b96f56ce76d0442f0",
    "88186e12003dea674cf4b2c90e85fe1b86d7114b3531b6b8d7c55a038b2234352cd4a86892ab56afb9a8067c80840201",
    "0475ae31ee7a8694fd60ab9e06d858b555c55dcb57310c7d3bbf508fc86822ed705f1c8292312194830008f4dc73c500",
    "268c22eae19bf08e0792093e7e19987eb47e323d5e37",
);

/// The PCR values it quoted (`--pcrs_format values`), in selection order.
pub(crate) const QUOTE_RSA_PCRS: &str = concat!(
    "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
    "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000000000000000000000000000",
);

/// TPM2B_PUBLIC of an ECC AK, `tpm2_createak -G ecc -g sha256 -s ecdsa`.
pub(crate) const AK_ECC_PUB: &str = concat!(
    "00580023000b00050072000000100018000b0003001000200a671f1292f2f83fecce4a3c8cdb3bae4fffc2b0829f6896",
    "8c481b59effef11900200f87fee810ad4c1cfa9ae5974d3c340fcacef05e6d9fd4c2735c6bb6f4d69cc7",
);

/// Its Name, from the TPM.
pub(crate) const AK_ECC_NAME: &str =
    "000bf21f4f6a658cb089fe311ba736c0c40c8e2834683bfe3bd0544099d72dda45d2";

/// TPMS_ATTEST of `tpm2_quote -c akecc -l sha256:0,1,2,3,7 -q a1b2c3d4e5f60718 -g sha256`.
pub(crate) const QUOTE_ECC_MSG: &str = concat!(
    "ff54434780180022000b472990fc409cbbcff2ca9309af5192a5d9c8e56861f7f167de635a1b508008490008a1b2c3d4",
    "e5f60718000000000004745b000000020000000001201910230016363600000001000b038f00000020b393978842a0fa",
    "3d3e1470196f098f473f9678e72463cb65ec4ab5581856c2e4",
);

/// Its TPMT_SIGNATURE (ECDSA/SHA-256).
pub(crate) const QUOTE_ECC_SIG: &str = concat!(
    "0018000b00204924cddc8a03171a5349f1c40ec431489f0f32adc65480cb18b090d8c4af9f1100201e721e81510fd87e",
    "8a671ed3244d33ff44eb6481408659e1af5c1b72618d1fb6",
);

/// The PCR values it quoted, in selection order.
pub(crate) const QUOTE_ECC_PCRS: &str = concat!(
    "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
    "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
    "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
    "00000000000000000000000000000000",
);

/// TPM2B_PUBLIC of a P-256 signing key (`tpm2_createprimary -C o -G ecc256:ecdsa-sha256`).
pub(crate) const DEVID_PUB: &str = concat!(
    "00580023000b00040072000000100018000b000300100020f54270a3eecf82af7f7d49f0823fcfe1461b68db561cf637",
    "65b85151a6df19b200207f2f0bbbb26b5028043ff938e544ab5c37296f812274ff4cfce68f63ed8dd55d",
);

/// Its Name, from the TPM.
pub(crate) const DEVID_NAME: &str =
    "000b0ce580951f392e85ff942b6cb451d14dce4b17d6b3dfd5bb25f33b3901ea41ab";

/// TPMS_ATTEST of `tpm2_certify -c devid -C ak(RSA) -g sha256`.
pub(crate) const CERTIFY_MSG: &str = concat!(
    "ff54434780170022000bd2de4564121ff25b88e09c9b0429f33e8ac8fedab5a358b6a9154aa778396a8b000400ff55aa",
    "0000000000047b8c00000002000000000120191023001636360022000b0ce580951f392e85ff942b6cb451d14dce4b17",
    "d6b3dfd5bb25f33b3901ea41ab0022000b8bfbbd73312e7f52b6cb5eefe6881c46d396752aa874aeb04172f4f57f132d",
    "a2",
);

/// Its TPMT_SIGNATURE (RSASSA/SHA-256 by the RSA AK).
pub(crate) const CERTIFY_SIG: &str = concat!(
    "0014000b01008c076a1eed95f964638d19f952a5093154eb569f2e4c41e5d627b957dae92b6aa11657e872d6c951da3e",
    "3bce34427bf35b87c035779cef6cb6f72e512f48e737d4aa0795463b5a570bf008aafe461219d620ca8cb186cf1d24ec",
    "8e553ba7bd0205453d6505d6a1f9ac98c1fe83f93a5efe2550e56bbaa67449ae67e01cfa0f1ee6a985d5973d61fe3d4a",
    "01afa54d91edfe13790acf78907014fe4b09f9db55cd0c9766be02c4c8aa23802f8fc0776d79fc09d17394912c778618",
    "372b14ce14c07fe2e022a563cb37efc543eaa44a00981525b47659ef924d363ebd59f8d634c0b00c6ade04191099a934",
    "d5584f66850ba23cf779eb28fb8a404a20b781f154f7",
);

/// Hex to bytes (fixtures are valid hex).
pub(crate) fn bytes(hex: &str) -> Vec<u8> {
    hex::decode(hex).unwrap()
}

/// fixedTPM | fixedParent | sensitiveDataOrigin | userWithAuth | restricted | sign, as
/// `tpm2_createak` makes an AK.
pub(crate) const AK_ATTRS: ObjectAttributes = ObjectAttributes(0x0005_0072);
/// The EK template L-1 attributes: fixedTPM | fixedParent | sensitiveDataOrigin |
/// adminWithPolicy | restricted | decrypt.
pub(crate) const EK_ATTRS: ObjectAttributes = ObjectAttributes(0x0003_00b2);

/// A test-only RSA key (generated with `openssl genpkey` for these tests: the `rsa` crate
/// takes many seconds to generate one in a debug build).
pub(crate) fn rsa_test_key(bits: usize) -> rsa::RsaPrivateKey {
    use rsa::pkcs8::DecodePrivateKey;
    let pem = match bits {
        2048 => include_str!("testdata/rsa2048.pem"),
        3072 => include_str!("testdata/rsa3072.pem"),
        4096 => include_str!("testdata/rsa4096.pem"),
        _ => panic!("no {bits}-bit test key"),
    };
    rsa::RsaPrivateKey::from_pkcs8_pem(pem).unwrap()
}

/// The TPM public area of an RSA key with `attrs` and `scheme` (nameAlg SHA-256).
pub(crate) fn rsa_public(
    key: &rsa::RsaPublicKey,
    attrs: ObjectAttributes,
    scheme: Option<KeyScheme>,
    symmetric: Option<SymmetricDef>,
) -> TpmPublic {
    use rsa::traits::PublicKeyParts;
    let e = key.e().to_bytes_be();
    let exponent = e.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b));
    TpmPublic::from_parts(PublicParts {
        name_alg: HashAlg::Sha256,
        object_attributes: attrs,
        auth_policy: Vec::new(),
        symmetric,
        scheme,
        kdf: None,
        key: PublicKey::Rsa {
            modulus: key.n().to_bytes_be(),
            exponent,
        },
    })
    .unwrap()
}

/// The TPM public area of an ECC key given as an uncompressed SEC1 point.
pub(crate) fn ecc_public(
    curve: EccCurve,
    sec1: &[u8],
    attrs: ObjectAttributes,
    scheme: Option<KeyScheme>,
    symmetric: Option<SymmetricDef>,
) -> TpmPublic {
    let n = curve.field_size();
    assert_eq!(sec1.len(), 1 + 2 * n);
    TpmPublic::from_parts(PublicParts {
        name_alg: HashAlg::Sha256,
        object_attributes: attrs,
        auth_policy: Vec::new(),
        symmetric,
        scheme,
        kdf: None,
        key: PublicKey::Ecc {
            curve,
            x: sec1[1..1 + n].to_vec(),
            y: sec1[1 + n..].to_vec(),
        },
    })
    .unwrap()
}

/// A small deterministic generator for fuzz-style loops (xorshift64*).
pub(crate) struct Xorshift(pub u64);

impl Xorshift {
    /// The next value.
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A value below `n` (n > 0).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Every prefix of `input` shorter than it: each must fail, none may panic.
pub(crate) fn truncations(input: &[u8]) -> impl Iterator<Item = &[u8]> {
    (0..input.len()).map(move |n| &input[..n])
}

/// `input` with bit `bit` flipped.
pub(crate) fn flipped(input: &[u8], bit: usize) -> Vec<u8> {
    let mut v = input.to_vec();
    v[bit / 8] ^= 1 << (bit % 8);
    v
}
