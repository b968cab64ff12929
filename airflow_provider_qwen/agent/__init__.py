"""The agent: the model calls Python tools over several turns, each turn journaled. No Airflow here."""
