# One image for the API and the stream worker (docker-compose.yml runs both).
FROM python:3.11-slim
WORKDIR /app
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY pyproject.toml README.md ./
COPY engine ./engine
COPY streams ./streams
COPY models ./models
COPY config ./config
COPY sdk_js/dist ./sdk_js/dist
RUN pip install --no-cache-dir .
EXPOSE 8000
CMD ["kairos", "api"]
