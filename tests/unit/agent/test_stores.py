import pytest

from airflow_provider_qwen.agent.stores import FolderJournal, JournalStoreError, StateStoreJournal


class FakeStateStore:
    def __init__(self):
        self.data = {}

    def get(self, key, default=None):
        return self.data.get(key, default)

    def set(self, key, value):
        self.data[key] = value


def test_state_store_journal_keeps_events_in_order_across_instances():
    store = FakeStateStore()
    StateStoreJournal(store).append({"type": "start", "n": 1})
    StateStoreJournal(store).append({"type": "answer", "n": 2})
    assert StateStoreJournal(store).load() == [{"type": "start", "n": 1}, {"type": "answer", "n": 2}]


def test_state_store_journal_refuses_what_is_not_events():
    store = FakeStateStore()
    store.data["qwen_agent_journal"] = {"not": "a list"}
    with pytest.raises(JournalStoreError, match="holds dict, not events"):
        StateStoreJournal(store).load()


def test_folder_journal_writes_one_file_per_event_and_reads_them_back(tmp_path):
    journal = FolderJournal(tmp_path)
    journal.append({"type": "start"})
    journal.append({"type": "answer"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["event-000001.json", "event-000002.json"]
    assert FolderJournal(tmp_path).load() == [{"type": "start"}, {"type": "answer"}]


def test_folder_journal_leaves_out_a_torn_last_event_and_replaces_it(tmp_path):
    FolderJournal(tmp_path).append({"type": "start"})
    (tmp_path / "event-000002.json").write_text('{"type": "ans')  # killed mid-write
    journal = FolderJournal(tmp_path)
    assert journal.load() == [{"type": "start"}]
    journal.append({"type": "answer"})
    assert FolderJournal(tmp_path).load() == [{"type": "start"}, {"type": "answer"}]


def test_folder_journal_refuses_a_torn_event_that_is_not_the_last(tmp_path):
    (tmp_path / "event-000001.json").write_text("{torn")
    (tmp_path / "event-000002.json").write_text("{}")
    with pytest.raises(JournalStoreError, match=r"event-000001\.json .* is not JSON"):
        FolderJournal(tmp_path).load()


def test_a_missing_folder_is_an_empty_journal(tmp_path):
    assert FolderJournal(tmp_path / "absent").load() == []
