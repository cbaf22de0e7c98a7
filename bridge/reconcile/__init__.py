"""Completion without MPPS: worklist items become COMPLETED when their study reaches
the PACS (docs/completion.md).

    settings.py  the ``reconcile`` section: the PACS, which items are watched, the bounds
    rules.py     what a found study means for its item: found, conflict, settled (pure)
    query.py     Study Root C-FIND at STUDY level, rate-limited (the SCU)
    apply.py     complete through bridge.steps.change_status, or flag a conflict
    loop.py      ``Reconciler``: the query loop (maintenance leader only)
    ian.py       ``IanService``: Instance Availability Notification SCP (PS3.4 Annex R)
    push.py      ``StudyPush``: Orthanc's stable-study hook, through the console's API

State lives in bridge/store/reconcile_tx.py. Like every domain package this one
imports steps, store and the base modules, never another domain package.
"""
