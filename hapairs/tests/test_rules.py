"""The pairing rules, every cell of both matrices (spec §2).

The expected answers are written here a second way (which secondaries may back each
primary, and which N:1 sets the guide lists), not read from rules.py's table, so a
typo in either shows up as a failure.
"""

from __future__ import annotations

import itertools

import pytest

from hapairs import rules
from hapairs.rules import NodeFacts

ALL_TYPES = ["3310", "3350", "3355", "3365", "VA-Low", "VA-Standard", "VA-High"]

# Spec §2, read row by row: primary → the secondaries that may back it.
MAY_BE_BACKED_BY = {
    "3310": {"3310", "3350", "3355"},
    "3350": {"3350", "3355"},
    "3355": {"3350", "3355"},
    "3365": {"3365"},
    "VA-Low": {"VA-Low", "VA-Standard", "VA-High"},
    "VA-Standard": {"VA-Standard", "VA-High"},
    "VA-High": {"VA-High"},
}

# Spec §2 N:1 table: secondary → the sets of two primaries it may back at once.
N_TO_1_ALLOWED = {
    "3350": [{"3310": 2}],
    "3355": [{"3310": 2}, {"3350": 2}, {"3310": 1, "3350": 1}],
}


def node(name, device_type, hm_ip, *, vip=None, prefix=None, version="7.2.103.0", activated=True, role="none"):
    return NodeFacts(
        name=name,
        device_type=device_type,
        version=version,
        hm_ip=hm_ip,
        vip=vip,
        vip_prefixlen=prefix,
        activated=activated,
        role=role,
    )


def primary_node(device_type, n=1, **kw):
    return node(f"p{n}", device_type, f"10.10.10.{20 + n}", vip=f"10.10.10.{40 + n}", prefix=24, role="primary", **kw)


def secondary_node(device_type, **kw):
    return node("s", device_type, "10.10.10.16", role="secondary", **kw)


def rules_broken(violations):
    return {v.rule for v in violations}


# --- the pairing matrix ------------------------------------------------------------
@pytest.mark.parametrize("primary_type,secondary_type", list(itertools.product(ALL_TYPES, ALL_TYPES)))
def test_every_cell_of_the_pairing_matrix(primary_type, secondary_type):
    # Given a primary and a secondary that satisfy every other rule
    primary, secondary = primary_node(primary_type), secondary_node(secondary_type)
    # When the pairing is validated
    violations = rules.validate_pairing(primary, secondary)
    # Then it is refused exactly when the guide's matrix says N
    allowed = secondary_type in MAY_BE_BACKED_BY[primary_type]
    assert (violations == []) == allowed, [v.message for v in violations]
    if not allowed:
        assert rules_broken(violations) == {"pairing_matrix"}
        assert violations[0].field == rules.F_SECONDARY


def test_the_matrix_table_has_every_cell_once():
    assert len(rules.PAIRING_MATRIX) == len(ALL_TYPES) ** 2
    assert set(rules.DEVICE_TYPES) == set(ALL_TYPES)


def test_lower_specification_message_reads_like_a_sentence():
    message = rules.matrix_violation("3350", "3310")
    assert message == "MSE-3310 cannot back up an MSE-3350: the secondary must be of equal or higher specification."


def test_3365_message_says_it_pairs_only_with_3365():
    assert "an MSE-3365 pairs only with another MSE-3365" in rules.matrix_violation("3365", "3355")
    assert "an MSE-3365 pairs only with another MSE-3365" in rules.matrix_violation("3355", "3365")


def test_physical_and_virtual_never_pair():
    message = rules.matrix_violation("VA-Low", "3355")
    assert "physical appliances pair only with physical ones" in message


def test_unknown_device_type_is_refused_with_its_name():
    assert rules.matrix_violation("3399", "3355") == "'3399' is not a known device type."


# --- the N:1 matrix -----------------------------------------------------------------
N_TO_1_CASES = [
    (secondary, first, second)
    for secondary in ALL_TYPES
    for first, second in itertools.combinations_with_replacement(ALL_TYPES, 2)
]


def _n_to_1_expected(secondary, first, second):
    if secondary not in MAY_BE_BACKED_BY[first] or secondary not in MAY_BE_BACKED_BY[second]:
        return False  # the 1:1 matrix already refuses one of them
    wanted = {t: [first, second].count(t) for t in {first, second}}
    return wanted in N_TO_1_ALLOWED.get(secondary, [])


@pytest.mark.parametrize("secondary_type,first_type,second_type", N_TO_1_CASES)
def test_every_cell_of_the_n_to_1_matrix(secondary_type, first_type, second_type):
    # Given a secondary already backing a primary of the first type
    existing = primary_node(first_type, n=1)
    newcomer = primary_node(second_type, n=2)
    secondary = secondary_node(secondary_type)
    # When a primary of the second type is added to it
    violations = rules.validate_pairing(newcomer, secondary, already_backed=[existing])
    # Then it is allowed exactly when the guide's N:1 table lists the pair of types
    # (and the 1:1 matrix allows the newcomer on its own)
    expected = _n_to_1_expected(secondary_type, first_type, second_type)
    if secondary_type not in MAY_BE_BACKED_BY[second_type]:
        assert "pairing_matrix" in rules_broken(violations)
    else:
        assert (violations == []) == expected, [v.message for v in violations]


def test_n_to_1_table_is_what_the_guide_lists():
    assert rules.n_to_1_violation("3355", ["3310", "3350"]) is None
    assert rules.n_to_1_violation("3355", ["3350", "3350"]) is None
    assert rules.n_to_1_violation("3350", ["3310", "3310"]) is None
    assert rules.n_to_1_violation("3355", ["3355", "3355"]) is not None
    assert rules.n_to_1_violation("3350", ["3310", "3350"]) is not None
    assert "N:1 is not supported" in rules.n_to_1_violation("3310", ["3310", "3310"])


def test_a_va_secondary_supports_1_to_1_only():
    existing = primary_node("VA-Low", n=1)
    violations = rules.validate_pairing(
        primary_node("VA-Low", n=2), secondary_node("VA-High"), already_backed=[existing]
    )
    assert rules_broken(violations) == {"va_one_to_one"}
    assert "A virtual appliance supports 1:1 only" in violations[0].message


def test_a_third_primary_is_refused_with_the_names_of_the_two():
    backed = [primary_node("3310", n=1), primary_node("3350", n=2)]
    violations = rules.validate_pairing(primary_node("3310", n=3), secondary_node("3355"), already_backed=backed)
    assert rules_broken(violations) == {"capacity"}
    assert "already backs two primaries (p1 and p2)" in violations[0].message


def test_revalidating_an_existing_pair_does_not_count_it_twice():
    primary = primary_node("3310", n=1)
    assert rules.validate_pairing(primary, secondary_node("3355"), already_backed=[primary]) == []


# --- addresses ------------------------------------------------------------------------
def test_the_seed_va_scenario_passes():
    mse1 = node("mse1", "VA-Low", "10.10.10.12", vip="10.10.10.11", prefix=24, role="primary")
    mse2 = node("mse2", "VA-Low", "10.10.10.13", role="secondary")
    assert rules.validate_pairing(mse1, mse2) == []


def test_hm_ip_equal_to_vip_is_refused():
    primary = node("p", "3355", "10.10.10.15", vip="10.10.10.15", prefix=24)
    violations = rules.validate_pairing(primary, secondary_node("3355"))
    assert rules_broken(violations) == {"hm_ip_equals_vip"}
    assert "they must be different" in violations[0].message


def test_layer_3_redundancy_is_refused_for_the_primary():
    primary = node("p", "3355", "10.10.20.15", vip="10.10.10.14", prefix=24)
    violations = rules.validate_pairing(primary, secondary_node("3355"))
    assert rules_broken(violations) == {"same_subnet"}
    assert "10.10.10.0/24" in violations[0].message and "Layer-3" in violations[0].message


def test_layer_3_redundancy_is_refused_for_the_secondary():
    secondary = node("s", "3355", "10.10.99.16", role="secondary")
    violations = rules.validate_pairing(primary_node("3355"), secondary)
    assert rules_broken(violations) == {"same_subnet"}
    assert violations[0].field == rules.F_SECONDARY_IP


def test_a_narrow_netmask_puts_the_secondary_outside():
    primary = node("p", "3355", "10.10.10.15", vip="10.10.10.14", prefix=30)  # 10.10.10.12/30
    violations = rules.validate_pairing(primary, node("s", "3355", "10.10.10.16"))
    assert rules_broken(violations) == {"same_subnet"}


def test_a_primary_without_vip_is_refused():
    primary = node("p", "3355", "10.10.10.15")
    assert rules_broken(rules.validate_pairing(primary, secondary_node("3355"))) == {"vip_required"}


# --- versions, roles, activation, wait ---------------------------------------------
def test_different_versions_are_refused():
    violations = rules.validate_pairing(primary_node("3355"), secondary_node("3355", version="8.0.110.0"))
    assert rules_broken(violations) == {"same_version"}
    assert "7.2.103.0" in violations[0].message and "8.0.110.0" in violations[0].message


def test_a_node_set_up_as_primary_cannot_be_a_secondary():
    secondary = node("s", "3355", "10.10.10.16", role="primary")
    assert rules_broken(rules.validate_pairing(primary_node("3355"), secondary)) == {"roles"}


def test_a_va_secondary_without_activation_asks_for_the_license():
    violations = rules.validate_pairing(primary_node("VA-Low"), secondary_node("VA-Low", activated=False))
    assert rules_broken(violations) == {"va_activation"}
    assert violations[0].field == rules.F_LICENSE
    assert "L-MSE-7.0-K9" in violations[0].message


def test_a_va_primary_without_activation_is_refused_too():
    violations = rules.validate_pairing(primary_node("VA-Low", activated=False), secondary_node("VA-Low"))
    assert rules_broken(violations) == {"va_activation"}


def test_physical_nodes_need_no_activation():
    assert rules.validate_pairing(primary_node("3310", activated=False), secondary_node("3355", activated=False)) == []


@pytest.mark.parametrize("wait,ok", [(1, False), (2, True), (10, True), (120, True), (121, False), (-5, False)])
def test_long_failover_wait_range(wait, ok):
    violations = rules.validate_pairing(primary_node("3355"), secondary_node("3355"), failover_wait=wait)
    assert (violations == []) == ok
    if not ok:
        assert violations[0].field == rules.F_FAILOVER_WAIT


def test_a_server_cannot_back_itself():
    same = primary_node("3355")
    assert rules_broken(rules.validate_pairing(same, same)) == {"distinct"}


def test_check_pairing_raises_with_every_violation_grouped_by_field():
    primary = node("p", "3355", "10.10.20.15", vip="10.10.10.14", prefix=24)
    secondary = secondary_node("3310", version="8.0.110.0")
    with pytest.raises(rules.PairingError) as caught:
        rules.check_pairing(primary, secondary, failover_wait=500)
    grouped = caught.value.by_field()
    assert set(grouped) == {rules.F_PRIMARY, rules.F_SECONDARY, rules.F_FAILOVER_WAIT}
    assert len(grouped[rules.F_SECONDARY]) == 2  # version and matrix


# --- witnesses ------------------------------------------------------------------------------
PAIR_ADDRESSES = {"127.10.10.15": "p's Health Monitor IP", "127.10.10.16": "s's Health Monitor IP"}


@pytest.mark.parametrize(
    "witnesses,rule,words",
    [
        (["witness-host"], "witness_address", "A witness is \"IP:PORT\", not 'witness-host'."),
        (["127.30.0.1:0"], "witness_address", "port must be 1-65535"),
        (["127.30.0.1:eighty"], "witness_address", 'A witness is "IP:PORT"'),
        (["127.10.10.16:9000"], "witness_on_node", "Witness 127.10.10.16:9000 is on s's Health Monitor IP"),
        (["127.10.10.15"], "witness_on_node", "Witness 127.10.10.15:8002 is on p's Health Monitor IP"),
        (["127.30.0.1", "127.30.0.1:8002"], "witness_duplicate", "Witness 127.30.0.1:8002 is listed twice."),
        ([f"127.30.0.{i}" for i in range(1, 9)], "witness_count", "At most 7 witnesses, not 8"),
    ],
)
def test_each_bad_witness_list_is_refused_under_the_witnesses_field(witnesses, rule, words):
    _addresses, violations = rules.witness_violations(witnesses, node_addresses=PAIR_ADDRESSES, password="pw-witness")
    assert [(v.field, v.rule) for v in violations] == [(rules.F_WITNESSES, rule)]
    assert words in violations[0].message


def test_witnesses_come_back_as_ip_port_with_the_default_port_and_seven_pass():
    seven = [f"127.30.0.{i}" for i in range(1, 8)]
    addresses, violations = rules.witness_violations(
        [" 127.30.0.9:9000 ", *seven[1:]], node_addresses=PAIR_ADDRESSES, password="pw-witness"
    )
    assert violations == []
    assert addresses == ["127.30.0.9:9000", *(f"{ip}:8002" for ip in seven[1:])]
    assert rules.split_witnesses(" 127.30.0.1,127.30.0.2\n127.30.0.3 ,, ") == ["127.30.0.1", "127.30.0.2", "127.30.0.3"]


@pytest.mark.parametrize(
    "password,stored,witnesses,problem",
    [
        ("", False, ["127.30.0.1"], "Enter the witness password"),
        ("abc", False, ["127.30.0.1"], "at least 4 characters"),
        ("abc", True, ["127.30.0.1"], "at least 4 characters"),  # a new one is checked even when one is kept
        ("", True, ["127.30.0.1"], None),  # blank keeps the stored one
        ("", False, [], None),  # no witnesses, no password needed
    ],
)
def test_the_witness_password_is_needed_with_witnesses_unless_one_is_stored(password, stored, witnesses, problem):
    _addresses, violations = rules.witness_violations(
        witnesses, node_addresses=PAIR_ADDRESSES, password=password, password_stored=stored
    )
    if problem is None:
        assert violations == []
    else:
        assert [v.field for v in violations] == [rules.F_WITNESS_PASSWORD] and problem in violations[0].message


def test_the_witness_modes_are_the_agents():
    assert rules.WITNESS_MODES == ("safe", "availability")
    _addresses, violations = rules.witness_violations([], node_addresses={}, mode="sometimes")
    assert [(v.field, v.rule) for v in violations] == [(rules.F_WITNESS_MODE, "witness_mode")]
