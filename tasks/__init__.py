"""Built-in tasks, imported explicitly so their registrations run."""

from tasks import vqa  # noqa: F401
from tasks.gqa import task as _gqa  # noqa: F401
from tasks.itm import task as _itm  # noqa: F401
from tasks.pretrain import task as _pretrain  # noqa: F401
from tasks.nlvr2 import task as _nlvr2  # noqa: F401
from tasks.vgd import task as _vgd  # noqa: F401
from tasks.clevr_ref import task as _clevr_ref  # noqa: F401
from tasks.caption import task as _caption  # noqa: F401
