"""Events and where they come from: `Event`, `EventChunk`, the `Source` protocol, dead letters,
replays of data sets (`datasets.open_source`) and the simulator."""

from freshrec.events.deadletter import (
           DeadLetter,
           DeadLetterSink,
           JsonlDeadLetters,
           MemoryDeadLetters,
)
from freshrec.events.event import Event, EventChunk, Field, FieldKind
from freshrec.events.simulator import Simulator, SimulatorConfig
from freshrec.events.source import PacedSource, Position, Source, TableReplay, limited

__all__ = ["DeadLetter", "DeadLetterSink", "Event", "EventChunk", "Field", "FieldKind", "JsonlDeadLetters",
           "MemoryDeadLetters", "PacedSource", "Position", "Simulator", "SimulatorConfig", "Source", "TableReplay",
           "limited"]
