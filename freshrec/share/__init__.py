"""Tables shared in memory between one trainer and the servers on its host: the trainer learns in
the shared rows (`ShareWriter`), the servers score from them (`Attachment`), with no copy and no
delta files; see `area.py` for the files and `freshrec.embedding.seqlock` for why a reader never
sees a row half-written."""

from freshrec.share.area import AreaBusy, SharedArea
from freshrec.share.reader import Attachment
from freshrec.share.writer import ShareWriter

__all__ = ["AreaBusy", "Attachment", "ShareWriter", "SharedArea"]
