//! Properties of the sealed format, over generated inputs: whatever part of a sealed value or
//! of its binding changes, it no longer opens; no input makes parsing panic.

use proptest::prelude::*;

use super::*;
use crate::crypto::purpose;

const KEYS: &str = "k1:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=,\
                    k2:AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=";
const PURPOSES: [&str; 4] = [
    purpose::REFRESH_TOKEN,
    purpose::PKCE_VERIFIER,
    purpose::ACCESS_TOKEN,
    purpose::BROKER_SECRET,
];

fn keyring() -> Keyring {
    Keyring::parse(KEYS).unwrap_or_else(|e| panic!("{e}"))
}

fn uuid(bits: u128) -> Uuid {
    Uuid::from_u128(bits)
}

/// One way of changing a sealed value or what it is opened for.
#[derive(Debug, Clone)]
enum Change {
    Row(u128),
    User(String),
    Purpose(usize),
    KeyId(String),
    NonceBit(usize),
    CiphertextBit(usize),
    Truncate(usize),
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        any::<u128>().prop_map(Change::Row),
        ".{0,40}".prop_map(Change::User),
        (1..PURPOSES.len()).prop_map(Change::Purpose),
        prop_oneof![Just("k2".to_owned()), "[a-z0-9.]{1,8}"].prop_map(Change::KeyId),
        (0..NONCE_LEN * 8).prop_map(Change::NonceBit),
        any::<usize>().prop_map(Change::CiphertextBit),
        any::<usize>().prop_map(Change::Truncate),
    ]
}

proptest! {
    #[test]
    fn any_change_and_the_value_no_longer_opens(
        plaintext in prop::collection::vec(any::<u8>(), 0..256),
        row in any::<u128>(),
        user in ".{0,40}",
        which in 0..PURPOSES.len(),
        change in change(),
    ) {
        let keys = keyring();
        let sealed = keys
            .seal(&plaintext, Binding { purpose: PURPOSES[which], row_id: uuid(row), user_id: &user })
            .unwrap_or_else(|e| panic!("{e}"));
        let opened = keys.open(&sealed, Binding { purpose: PURPOSES[which], row_id: uuid(row), user_id: &user });
        prop_assert_eq!(opened.map(|p| p.to_vec()).ok(), Some(plaintext.clone()));

        let (mut sealed, mut row_id, mut user_id, mut purpose) =
            (sealed, uuid(row), user.clone(), PURPOSES[which]);
        match &change {
            Change::Row(other) => {
                prop_assume!(*other != row);
                row_id = uuid(*other);
            }
            Change::User(other) => {
                prop_assume!(*other != user);
                user_id = other.clone();
            }
            Change::Purpose(step) => purpose = PURPOSES[(which + step) % PURPOSES.len()],
            Change::KeyId(other) => {
                prop_assume!(*other != sealed.key_id);
                sealed.key_id = other.clone();
            }
            Change::NonceBit(bit) => sealed.nonce[bit / 8] ^= 1 << (bit % 8),
            Change::CiphertextBit(bit) => {
                let bit = bit % (sealed.ciphertext.len() * 8);
                sealed.ciphertext[bit / 8] ^= 1 << (bit % 8);
            }
            Change::Truncate(cut) => {
                let cut = cut % sealed.ciphertext.len();
                sealed.ciphertext.truncate(cut);
            }
        }
        let opened = keys.open(&sealed, Binding { purpose, row_id, user_id: &user_id });
        prop_assert!(opened.is_err(), "{:?} still opens", change);
    }

    #[test]
    fn the_stored_form_round_trips(
        plaintext in prop::collection::vec(any::<u8>(), 0..64),
        row in any::<u128>(),
    ) {
        let keys = keyring();
        let binding = Binding { purpose: purpose::ACCESS_TOKEN, row_id: uuid(row), user_id: "u" };
        let sealed = keys.seal(&plaintext, binding).unwrap_or_else(|e| panic!("{e}"));
        let back = Sealed::from_bytes(&sealed.to_bytes());
        prop_assert_eq!(back.as_ref(), Ok(&sealed));
    }

    #[test]
    fn any_bytes_parse_or_fail_without_panicking(blob in prop::collection::vec(any::<u8>(), 0..120)) {
        if let Ok(sealed) = Sealed::from_bytes(&blob) {
            prop_assert_eq!(sealed.to_bytes(), blob);
            let binding = Binding { purpose: purpose::ACCESS_TOKEN, row_id: uuid(1), user_id: "u" };
            prop_assert!(keyring().open(&sealed, binding).is_err());
        }
    }

    #[test]
    fn any_key_specification_parses_or_fails_without_panicking(
        spec in prop_oneof![
            ".{0,200}",
            "([a-z0-9._-]{0,70}:[A-Za-z0-9+/=]{0,50}, ?){0,4}",
        ],
    ) {
        let _ = Keyring::parse(&spec);
    }
}
