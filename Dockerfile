# The dunwise image: `docker run dunwise run|migrate|import|invoice ...`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# DejaVu Sans lets statements and invoices (PDF) show customer names in any Latin, Greek or
# Cyrillic script.
RUN apt-get update \
    && apt-get install -y --no-install-recommends fonts-dejavu-core \
    && rm -rf /var/lib/apt/lists/*

# Dependencies first, from pyproject.toml alone, so a code change reuses this layer.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# Editable install: templates/messages, policies/*.yaml and the Alembic migrations are read
# from beside the modules, so the code runs from this tree rather than from site-packages.
COPY . .
RUN pip install --no-deps -e . \
    && useradd --system --create-home --home-dir /home/dunwise dunwise \
    && mkdir -p /var/lib/dunwise \
    && chown dunwise:dunwise /var/lib/dunwise

USER dunwise
ENV DUNWISE_DATA_DIR=/var/lib/dunwise

ENTRYPOINT ["dunwise"]
CMD ["run"]
