import pytest
from hypothesis import given
from hypothesis import strategies as st

from volant.errors import ValidationError
from volant.names import validate_name


@pytest.mark.parametrize("name", ["web", "web-1", "a", "0", "a" * 63, "x9-y8"])
def test_valid_names(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize(
    "name",
    ["", "a/b", "..", "../etc", "a b", "a\x00b", "a\nb", "abc\n", "-web", "web-", "Web", "a" * 64,
     "a" * 300, "web.1", "web_1", "é"],
)
def test_invalid_names_are_rejected_with_the_kind(name: str) -> None:
    with pytest.raises(ValidationError) as info:
        validate_name(name, "vm name")
    assert "vm name" in info.value.message


def test_non_strings_are_rejected() -> None:
    for value in (None, 3, ["web"], {"a": 1}):
        with pytest.raises(ValidationError):
            validate_name(value)


@given(st.text(max_size=80))
def test_accepted_names_are_path_and_hostname_safe(name: str) -> None:
    try:
        validate_name(name)
    except ValidationError:
        return
    assert "/" not in name and ".." not in name and name.isascii()
    assert all(c.isalnum() or c == "-" for c in name) and len(name) <= 63
