"""Writes the encrypted test wallet that chain-client's tests read, with bittensor-wallet 4.1.1
(Bittensor's own keyfile code): `pip install bittensor-wallet==4.1.1`, then run this from the
repository root. The keys are from a published test mnemonic; never use them for anything else."""

import json
import os

from bittensor_wallet import Keyfile, Keypair

ROOT = "chain-client/tests/data/wallets"
PASSWORD = "correct horse battery staple"
COLDKEY = "bottom drive obey lake curtain smoke basket hold race lonely fit walk"
HOTKEY = "legal winner thank year wave sausage worth useful legal winner thank yellow"

cold = Keypair.create_from_mnemonic(COLDKEY)
hot = Keypair.create_from_mnemonic(HOTKEY)
os.makedirs(f"{ROOT}/sealed/hotkeys", exist_ok=True)
Keyfile(f"{ROOT}/sealed/coldkey", name="coldkey").set_keypair(
    cold, encrypt=True, overwrite=True, password=PASSWORD
)
Keyfile(f"{ROOT}/sealed/hotkeys/default", name="default").set_keypair(
    hot, encrypt=True, overwrite=True, password=PASSWORD
)
with open(f"{ROOT}/expected.json", "w") as f:
    json.dump(
        {
            "password": PASSWORD,
            "coldkey": {"ss58": cold.ss58_address, "public": "0x" + cold.public_key.hex()},
            "hotkey": {"ss58": hot.ss58_address, "public": "0x" + hot.public_key.hex()},
        },
        f,
        indent=1,
    )
    f.write("\n")
