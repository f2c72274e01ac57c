"""A perplexity text that is not UTF-8 is an error naming the file and the fix, not a bare codec error."""

import pytest

from experiments.eval import EvalConfig, evaluate
from tests.eval.models import byte_tokenizer, config
from tests.inference.tiny import random_params


def test_latin1_text_names_the_file_and_the_fix(tmp_path):
    c = config(sliding_window=0)
    model = (random_params(c, 0), c, byte_tokenizer())
    path = tmp_path / "held_out_latin1.txt"
    path.write_bytes("Un café très noir.".encode("latin-1"))
    with pytest.raises(ValueError, match=r"held_out_latin1\.txt: not valid UTF-8 at byte offset 6 .*iconv -f latin1"):
        evaluate(EvalConfig(task="perplexity", run="r", data=str(path), progress=False), model)
    # CRLF line ends are scored as they are on disk, as training reads them
    path.write_bytes(b"one\r\ntwo\r\n")
    result = evaluate(EvalConfig(task="perplexity", run="r", data=str(path), progress=False), model)
    assert result["metrics"]["bytes"] == 10
