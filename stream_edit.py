"""Edit a fitted 4D NeRF with an instruction (Instruct 4D-to-4D): IP2P edits the dataset in editor processes while
this process keeps fitting the NeRF to it.

    python stream_edit.py --config configs/n3dv/edit_coffee_50_2.txt \
        --datadir data/neural_3d/coffee_martini --basedir log/neural_3d --expname edit_coffee_50_2 \
        --ckpt log/neural_3d/train_coffee_50_2/ckpt-99999.th --prompt 'What if it was painted by Van Gogh?'

Writes into ``{basedir}/{expname}``: ``config.txt``, ``ckpt-{iteration}.th``, TensorBoard logs, ``cache/`` (depth
renders), ``previews/`` (one grid per editing unit), ``edit_state.json`` + ``edited_images.npy`` (the edited
dataset and what is done; ``--resume`` continues from them), ``imgs_test_all/``, ``imgs_path_all/`` and
``side_by_side_camXX.mp4`` at the end. Exit codes: 0 done, 1 an editor failed (its traceback is printed; the
NeRF and the edit so far are saved), 2 bad options or input, 130 Ctrl-C (saved; resume with ``--resume``).
"""

from __future__ import annotations

import logging
import sys

from common.errors import UserError
from editing.options import parse_edit_args
from editing.run import EditRun

log = logging.getLogger("stream_edit")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        args = parse_edit_args(argv)
        return EditRun(args).run()
    except UserError as err:
        log.error("%s", err)
        return 2


if __name__ == "__main__":
    sys.exit(main())
