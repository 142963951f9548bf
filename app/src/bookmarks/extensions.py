"""Extension objects, created here and bound to an app by ``create_app`` (no app at import time).

Both support several apps in one process (the cache-coherence tests run two), so module-level
instances are safe. The flask-smorest ``Api`` is not: it keeps one spec per instance, so ``api.py``
makes one per app.
"""

from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import MetaData
from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    """Declarative base with a naming convention, so Alembic names constraints predictably.

    Predictable names let a migration drop or alter a constraint on every server the same way, and
    let the repository recognise a unique violation by its constraint name.
    """

    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


db = SQLAlchemy(model_class=Base)
migrate = Migrate()
